"""The Ray side of a run: the client-actor pool and the executor the event loop talks to.

Kept out of ``sim/`` so that the event loop depends on the executor protocol and on policy only.
"""
