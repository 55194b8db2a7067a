"""Storing code packages in the Ray cluster the way Ray stores a job's working dir (Ray 2.60 internals).

``ray job submit --working-dir`` zips the folder and puts it in the GCS's key-value store under its
content-addressed URI ``gcs://_ray_pkg_<sha1>.zip`` (``ray._private.runtime_env.packaging.
upload_package_if_needed``); any actor whose ``runtime_env`` names that URI downloads and unpacks it on
its node. :func:`store_package` does the same for a zip that arrived over HTTP: same URI for the same
bytes, uploaded only when the GCS does not have it yet.

The GCS deletes a package once nothing references it (jobs and detached actors using it; a temporary pin
otherwise): a pool scaled to zero references nothing, so the package is pinned for ``PIN_S`` (the GCS
holds it in memory until then, or until the Ray cluster restarts: then deploy again).
Runs where Ray is connected (the HTTP replica, inside Serve); blocking: call it in a thread.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.core.packages import inspect_package

log = logging.getLogger("ripple.packages")
PIN_S = 10 * 365 * 86_400  # ten years: as long as the Ray cluster lives


def store_package(data: bytes, max_bytes: int) -> dict[str, Any]:
    """Check ``data`` (a zip; InvalidInput when it is not a valid package), store it in the GCS unless
    it is there already, pin it, and return ``{"uri", "codeDigest", "sizeBytes", "files",
    "requirements", "existed"}``."""
    from ray._private.runtime_env.packaging import package_exists, upload_package_to_gcs
    from ray.experimental.internal_kv import _pin_runtime_env_uri

    info = inspect_package(data, max_bytes)
    existed = bool(package_exists(info.uri))
    if not existed:
        upload_package_to_gcs(info.uri, data)
        log.info("package %s stored (%d bytes, %d files)", info.uri, info.size_bytes, info.files)
    _pin_runtime_env_uri(info.uri, expiration_s=PIN_S)
    return {**info.wire(), "existed": existed}
