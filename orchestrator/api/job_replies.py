"""A job's status object as an HTTP reply, its output sent on as the store keeps it.

A job's output is JSON text in the store, written once by the replica that ran it (or the worker route).
Decoding it here only to encode it again costs tens of milliseconds for an image of a few megabytes, on
the API replica every request passes through: the reply is the status object's other fields, encoded, with
the stored text put in as ``output``.
"""

from __future__ import annotations

from fastapi import Response

from orchestrator.core.jobs import JobView


def status_reply(job: JobView, now_ms: int) -> Response:
    """``job``'s RunPod status object (:meth:`JobView.status_object`, the keys it has) as a JSON reply,
    with :meth:`JobView.shown_output_json` as its ``output``, not decoded (:meth:`JobView.status_json`)."""
    return Response(job.status_json(now_ms).encode(), media_type="application/json")
