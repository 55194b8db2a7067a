"""Storing code packages in the Ray cluster the way Ray stores a job's working dir (Ray 2.60 internals).

``ray job submit --working-dir`` zips the folder and puts it in the GCS's key-value store under its
content-addressed URI ``gcs://_ray_pkg_<sha1>.zip`` (``ray._private.runtime_env.packaging.
upload_package_if_needed``); any actor whose ``runtime_env`` names that URI downloads and unpacks it on
its node. :func:`put_package` does the same for a zip that arrived over HTTP (checked by
``orchestrator.core.packages.inspect_package``): same URI for the same bytes, uploaded only when the GCS
does not have it yet.

The GCS deletes a package once nothing references it (jobs and detached actors using it; a temporary pin
otherwise): a pool scaled to zero references nothing, so the package is pinned for ``PIN_S``. The GCS holds
it in memory until then, or until the Ray head restarts (in Redis too with GCS fault tolerance, as on
KubeRay, so it survives there). ``ripple up`` keeps a copy of each package in its data dir (``keep_dir``)
and puts those back in the GCS when it starts a new head (:func:`restore_packages`), so its deployed
versions survive ``ripple down`` / ``ripple up``; elsewhere, deploy again after a head restart without
fault tolerance (the version's start error says so). The queue deletes the packages no kept version
names (:class:`GcsPackageShelf`, :mod:`orchestrator.core.package_retention`): the GCS key and the copy.
Runs where Ray is connected (the HTTP replica inside Serve, ``ripple up``, the queue actor); blocking.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from orchestrator.core.packages import RAY_PKG_PREFIX, PackageInfo, package_uri

log = logging.getLogger("ripple.packages")
PIN_S = 10 * 365 * 86_400  # ten years: as long as the Ray cluster lives


def put_package(data: bytes, info: PackageInfo, keep_dir: Path | None = None) -> bool:
    """Store the checked package ``data`` (described by ``info``) in the GCS unless it is there already,
    pin it, and keep a copy in ``keep_dir`` when given. Returns whether the GCS had it already."""
    from ray._private.runtime_env.packaging import package_exists, upload_package_to_gcs
    from ray.experimental.internal_kv import _pin_runtime_env_uri

    if keep_dir is not None:
        _keep(keep_dir, info.uri, data)
    existed = bool(package_exists(info.uri))
    if not existed:
        upload_package_to_gcs(info.uri, data)
        log.info("package %s stored (%d bytes, %d files)", info.uri, info.size_bytes, info.files)
    _pin_runtime_env_uri(info.uri, expiration_s=PIN_S)
    return existed


class GcsPackageShelf:
    """Deletes code packages from the GCS and from ``keep_dir`` (``ripple up``'s copies, when given), so
    that neither holds a package no version may run again (a :class:`orchestrator.core.dispatch_ports.
    PackageShelf`). The pin taken at upload is not undone: it only keeps a key the GCS no longer has."""

    def __init__(self, keep_dir: Path | None = None) -> None:
        self.keep_dir = keep_dir

    def delete(self, uri: str) -> bool:
        from ray.experimental.internal_kv import _internal_kv_del

        try:
            _internal_kv_del(uri)
            if self.keep_dir is not None:
                (self.keep_dir / uri.removeprefix("gcs://")).unlink(missing_ok=True)
        except Exception:  # a GCS or disk error: the package stays recorded and is tried again
            log.warning("could not delete code package %s", uri, exc_info=True)
            return False
        log.info("package %s deleted", uri)
        return True


def _keep(keep_dir: Path, uri: str, data: bytes) -> None:
    """Write ``data`` to ``keep_dir`` under the URI's file name, whole or not at all (once per URI). A
    copy that cannot be written is logged, not raised: the package is stored in the GCS all the same."""
    path = keep_dir / uri.removeprefix("gcs://")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.exists():
            return
        keep_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        log.warning("could not keep a copy of package %s in %s", uri, keep_dir, exc_info=True)


def restore_packages(keep_dir: Path) -> list[str]:
    """Put every package kept in ``keep_dir`` that the GCS lacks back in it, pinned (a new Ray head has
    none); returns their URIs. A kept file whose bytes no longer match its name is skipped and logged."""
    from ray._private.runtime_env.packaging import package_exists, upload_package_to_gcs
    from ray.experimental.internal_kv import _pin_runtime_env_uri

    restored: list[str] = []
    for path in sorted(keep_dir.glob(f"{RAY_PKG_PREFIX}*.zip")) if keep_dir.is_dir() else []:
        uri = f"gcs://{path.name}"
        if package_exists(uri):
            continue
        data = path.read_bytes()
        if package_uri(data) != uri:
            log.warning("kept package %s does not match its name; not restored", path)
            continue
        upload_package_to_gcs(uri, data)
        _pin_runtime_env_uri(uri, expiration_s=PIN_S)
        restored.append(uri)
    return restored
