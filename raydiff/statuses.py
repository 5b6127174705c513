"""The final statuses of a job in events.parquet (README: "The run folder"), as constants.

Importing this module loads neither torch nor Ray, so analysis code can use them freely.
"""

from __future__ import annotations

APPLIED = "applied"  # the update made it into applied_version
DROPPED = "dropped"  # the client dropped out (failure_reason: dropout_<phase>)
FAILED = "failed"  # the client went offline mid-job, or its actor died (actor_lost)
REJECTED = "rejected"  # non_finite, stale, norm, over_selected, deadline, run_stopped, buffer_unflushed, interrupted
STATUSES = (APPLIED, DROPPED, FAILED, REJECTED)
