"""Ripple's operator web UI: a small single-page app served by the Ripple app itself under ``/ui``.

The Serve app mounts ``build_ui_router(...)`` (or calls ``mount(app, state)`` when its keys are known only
once the replica starts) and, for ``/api/v1`` and ``/v2`` client routes, accepts either
``Authorization: Bearer KEY`` or a session cookie checked with ``session.verify_request`` (which requires the
``X-CSRF-Token`` header on non-GET methods).
"""

from __future__ import annotations

from orchestrator.api.webui.routes import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    UiAuth,
    build_ui_router,
    build_ui_router_from,
    mount,
    verify_browser_request,
)
from orchestrator.api.webui.session import verify_request

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "UiAuth",
    "build_ui_router",
    "build_ui_router_from",
    "mount",
    "verify_browser_request",
    "verify_request",
]
