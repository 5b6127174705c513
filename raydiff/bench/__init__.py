"""``raydiff bench overhead | aggregate | engine``: ratios and rates measured in one run.

Each benchmark prints a small table and, as its LAST line, the figure its target is about, so that
scripts (and docs/performance.md) can quote it.
"""
