"""The FastAPI app: every router, the error handlers, the middleware and the web UI, around one
:class:`~orchestrator.api.deps.AppState` (no Ray needed until a route calls an actor)."""

from __future__ import annotations

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.api.deps import AppState
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.middleware import BodyLimit, RequestIdMiddleware
from orchestrator.api.routes import ROUTERS


def create_app(state: AppState) -> FastAPI:
    """The HTTP app for ``state``; routes reach it as ``request.app.state.ripple``."""
    api = FastAPI(
        title="Ripple",
        version=__version__,
        description="Serverless GPU job orchestrator on Ray: RunPod-compatible API.",
    )
    api.state.ripple = state
    api.add_middleware(BodyLimit, limit_bytes=state.body_limit, told=state.told_of_oversized)
    # Outermost: every reply, a 413 included, gets the id.
    api.add_middleware(RequestIdMiddleware, echo=lambda: not state.behind_serve)
    install_error_handlers(api, on_unavailable=state.forget_actors)
    for router in ROUTERS:
        api.include_router(router)
    _mount_ui(api, state)
    return api


def _mount_ui(api: FastAPI, state: AppState) -> None:
    try:
        from orchestrator.api.webui import mount
    except ImportError:
        return
    mount(api, state)
