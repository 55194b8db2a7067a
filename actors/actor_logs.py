"""Reading a Ray actor's stdout/stderr through Ray's state API (``ray.util.state.get_log``).

Ray writes each actor process's output to ``worker-*.out`` / ``.err`` on the actor's node. ``get_log``
asks the Ray dashboard (its address is registered in the GCS), which finds the actor's node and worker in
the actor table and streams the file from that node's dashboard agent: any node of the cluster, also after
the actor died, as long as its node is alive. It needs the dashboard running (``dashboard: true``, the
default; ``ray start --include-dashboard``). Blocking calls: the HTTP layer runs them in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import ray

from orchestrator.core.errors import NotFound, NotReady
from orchestrator.core.worker_logs import LogStream

_SUFFIX = {"stdout": "out", "stderr": "err"}
READ_TIMEOUT_S = 15
# Ray counts its own marker lines (``:actor_name:``...) in ``tail``: read a little more than asked.
_TAIL_SLACK = 16


def _gcs_address() -> str | None:
    """This process's cluster (the caller is a Ray worker: the Serve replica)."""
    if not ray.is_initialized():
        return None
    address: str = ray.get_runtime_context().gcs_address
    return address


def _translate(exc: Exception, actor_id: str) -> Exception:
    """Ray's error as ours: a log Ray does not have is NotFound; an unreachable dashboard is NotReady."""
    from ray.util.state.exception import RayStateApiException, ServerUnavailable

    text = str(exc)
    if isinstance(exc, (ServerUnavailable, ConnectionError, OSError)):
        return NotReady(
            "Ray's log service (the dashboard) is not reachable; worker logs need the Ray dashboard "
            f"(setting dashboard: true): {text[:300]}"
        )
    if isinstance(exc, RayStateApiException):
        return NotFound(
            f"Ray has no {actor_id} log (the actor never started, or its node is gone): {text[:500]}",
            {"actorId": actor_id},
        )
    if isinstance(exc, ValueError):  # the dashboard's address is not in the GCS: no dashboard
        return NotReady(f"worker logs need the Ray dashboard (setting dashboard: true): {text[:300]}")
    return exc


class RayActorLogs:
    """:class:`orchestrator.core.worker_logs.ActorLogs` over ``ray.util.state.get_log``."""

    def read(self, actor_id: str, tail: int, stream: LogStream) -> str:
        """The last ``tail`` lines (-1: all) of the actor's ``stream``, Ray's marker lines included."""
        from ray.util.state import get_log

        try:
            return "".join(
                get_log(
                    address=_gcs_address(),
                    actor_id=actor_id,
                    tail=tail if tail < 0 else tail + _TAIL_SLACK,
                    suffix=_SUFFIX[stream],
                    timeout=READ_TIMEOUT_S,
                    errors="replace",
                )
            )
        except Exception as exc:
            raise _translate(exc, actor_id) from exc

    def follow(self, actor_id: str, tail: int, stream: LogStream) -> Iterator[str]:
        """The last ``tail`` lines, then what the actor writes next, as Ray streams it; the caller stops by
        closing the iterator."""
        from ray.util.state import get_log

        pieces = get_log(
            address=_gcs_address(),
            actor_id=actor_id,
            tail=tail,
            suffix=_SUFFIX[stream],
            follow=True,
            timeout=READ_TIMEOUT_S,
            errors="replace",
            _interval=0.5,
        )
        try:
            yield from pieces
        except Exception as exc:
            raise _translate(exc, actor_id) from exc
        finally:
            pieces.close()
