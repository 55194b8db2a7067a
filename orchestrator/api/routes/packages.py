"""Code packages (API key): ``POST /api/v1/packages`` with a zip as the body stores it in the Ray cluster.

What ``ripple deploy`` and the web UI's deploy form send: the reply's ``uri`` (``gcs://_ray_pkg_<sha1>.zip``,
content-addressed, stored once) goes into the endpoint's ``runtimeEnv.working_dir``, ``codeDigest`` into
its ``codeDigest`` and ``requirements`` (from ``requirements.txt``) into ``runtimeEnv.pip``. The body
limit of this route is ``RIPPLE_MAX_PACKAGE_BYTES`` (the middleware allows it on this path only).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from orchestrator.api import schemas as s
from orchestrator.api.deps import PACKAGES_PATH, Queue, State, require_api_key
from orchestrator.core.packages import inspect_package

router = APIRouter(tags=["management"], dependencies=[Depends(require_api_key)])


@router.post(PACKAGES_PATH, status_code=201, response_model=s.PackageStored)
async def store_package(request: Request, state: State, queue: Queue) -> s.PackageStored:
    """Store the zip in the body (422 when it is not a valid package or is over the limit; 413 past the
    limit by Content-Length). Returns its URI, code digest, size, file count, requirements and whether
    the cluster had it already. The queue records its arrival first, so that it is kept until a version
    names it (``orchestrator.core.package_retention``)."""
    boot = state.require_boot()
    put = state.require_store_package()
    data = await request.body()
    info = await asyncio.to_thread(inspect_package, data, boot.max_package_bytes)
    await queue.package_arriving(info.uri)
    existed = await asyncio.to_thread(put, data, info)
    return s.PackageStored.model_validate({**info.wire(), "existed": existed})
