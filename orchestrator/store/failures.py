"""Job-store failures a client can only retry, in words: Redis out of memory, or not answering.

The HTTP app turns them into a 503 with these messages (:mod:`orchestrator.api.errors`), not a 500; the
store is the one layer that knows Redis's exceptions.
"""

from __future__ import annotations

import redis

STORE_FULL_WHY = "the job store (Redis) is out of memory (its used memory is over its maxmemory)"
STORE_DOWN_WHY = "the job store (Redis) does not answer"
STORE_FULL = (
    f"{STORE_FULL_WHY}: nothing can be queued until it has room; finished jobs are deleted "
    "RIPPLE_KEEP_RESULTS_S after they end, or give Redis more memory (`ripple doctor` shows its use)"
)
STORE_DOWN = f"{STORE_DOWN_WHY}: retry shortly (`ripple doctor` says more)"
_ADVICE = {STORE_FULL_WHY: STORE_FULL, STORE_DOWN_WHY: STORE_DOWN}


def store_trouble(exc: BaseException) -> str | None:
    """What is wrong with the job store, when ``exc`` says it can only be waited out (for a record of why
    something waits, such as a replica's reason): Redis out of memory, or not answering; None for any other
    error. An error an actor raised, wrapped by Ray in a ``RayTaskError``, is judged by its cause."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    if isinstance(exc, redis.exceptions.ResponseError) and "OOM command not allowed" in str(exc):
        return STORE_FULL_WHY
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return STORE_DOWN_WHY  # BusyLoadingError (Redis reading its data back at start) is a ConnectionError
    return None


def store_failure(exc: BaseException) -> str | None:
    """What to tell a client of a job-store error it can only retry (the message of a 503): what is wrong
    (:func:`store_trouble`) and what to do; None for any other error."""
    why = store_trouble(exc)
    return None if why is None else _ADVICE[why]
