"""HTTP routes of the operator web UI, mounted by the Serve app under ``/ui``.

The UI is a static single-page app (``static/index.html`` plus ES modules) that reads the same JSON APIs as
every other client. This module only serves those files and handles login and logout:

- ``GET /ui`` and ``GET /ui/``: the app shell; with auth on and no valid session, a 303 to ``/ui/login``.
- ``GET /ui/login``: the login form, carrying a signed double-submit token (cookie + hidden field).
- ``POST /ui/login``: form field ``api_key``, checked on the server with ``check_api_key``; on success sets
  the HttpOnly session cookie and the readable CSRF cookie and redirects to ``/ui/``; a wrong key answers
  401 with the form and a message; a missing or forged form token answers 403.
- ``POST /ui/logout``: clears the cookies and redirects to the login page.
- ``GET /ui/session``: ``{"authEnabled", "authenticated", "csrfToken", "expiresAt", "key", "scope"}`` (401
  when auth is on and there is no session, or its key was revoked). With a ``read`` key the UI hides every
  change control; the server refuses changes anyway (403).

Any admin or read key logs in (client and worker keys are refused with 403); the session carries the key's
name, and every request checks that the key still exists, so revoking a key ends its sessions.
- ``GET /ui/static/{name}``: the app's own files, from a fixed allow-list.

No page embeds a key: the browser holds only the session cookie and the CSRF token derived from it.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from orchestrator.api.deps import AppState, principal_of_key, principal_of_subject, queue_from
from orchestrator.api.webui import session as sessions
from orchestrator.core.scopes import ADMIN_KEY_NAME, Family, refusal

SESSION_COOKIE = "ripple_session"
CSRF_COOKIE = "ripple_csrf"
LOGIN_COOKIE = "ripple_login"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_TOKEN_TTL_S = 3600
MAX_LOGIN_BODY_BYTES = 8192

STATIC_DIR = Path(__file__).resolve().parent / "static"
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Templates are rendered by the routes below, never served raw.
_TEMPLATES = frozenset({"index.html", "login.html"})

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _static_names() -> frozenset[str]:
    """The files ``/ui/static/{name}`` may serve: our own assets, nothing else."""
    return frozenset(
        path.name
        for path in STATIC_DIR.iterdir()
        if path.is_file() and path.suffix in _MEDIA_TYPES and path.name not in _TEMPLATES
    )


def _page(body: str, status_code: int = 200) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return Response(body, status_code=status_code, media_type="text/html; charset=utf-8", headers=headers)


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def render_login(csrf_token: str, message: str = "") -> str:
    """The login page with the form token and an optional error message, both HTML-escaped."""
    template = (STATIC_DIR / "login.html").read_text(encoding="utf-8")
    message_html = f'<p class="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    return template.replace("{{csrf_token}}", html.escape(csrf_token, quote=True)).replace(
        "{{message}}", message_html
    )


class LoginRefused(Exception):
    """A key that may not log in to the UI; ``status_code`` 401 (unknown key) or 403 (wrong scope)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class UiAuth:
    """How the UI authenticates: the key check, the session secret and the cookie policy.

    With named keys, ``login_subject(request, key)`` returns the name of the key to log in as (raising
    :class:`LoginRefused`) and ``session_scope(request, subject)`` the scope of a session's key (None when
    the key was revoked); without them only the instance's API key (``check_api_key``) logs in, as admin.
    """

    check_api_key: Callable[[str], bool]
    session_secret: bytes
    secure_cookie: bool
    auth_enabled: bool
    login_subject: Callable[[Request, str], Awaitable[str]] | None = None
    session_scope: Callable[[Request, str], Awaitable[str | None]] | None = None

    def __post_init__(self) -> None:
        if self.auth_enabled and len(self.session_secret) < 16:
            raise ValueError("session_secret must be at least 16 bytes when auth is enabled")


def _not_ready() -> Response:
    body = "<!doctype html><title>Ripple</title><p>Ripple is starting. Reload in a few seconds.</p>"
    return Response(
        body, status_code=503, media_type="text/html; charset=utf-8", headers={"Retry-After": "2"}
    )


class _UiRoutes:
    """The handlers behind the ``/ui`` routes. The auth settings are read per request from ``settings``
    (None while the app is starting), so the router can be mounted before the app knows its keys."""

    def __init__(
        self, settings: Callable[[], UiAuth | None], clock_s: Callable[[], float], session_ttl_s: int
    ) -> None:
        self.settings = settings
        self.clock_s = clock_s
        self.session_ttl_s = session_ttl_s
        self.static_names = _static_names()

    # The per-request view of the settings; handlers call ``self.ready()`` first.
    @property
    def auth_enabled(self) -> bool:
        return self._auth().auth_enabled

    @property
    def secret(self) -> bytes:
        return self._auth().session_secret

    @property
    def secure_cookie(self) -> bool:
        return self._auth().secure_cookie

    def check_api_key(self, key: str) -> bool:
        return self._auth().check_api_key(key)

    def _auth(self) -> UiAuth:
        found = self.settings()
        if found is None:
            raise RuntimeError("UI auth settings used before the app was ready")
        return found

    def ready(self) -> bool:
        return self.settings() is not None

    def current_session(self, request: Request) -> sessions.Session | None:
        return sessions.verify_session(request.cookies.get(SESSION_COOKIE), self.secret, self.clock_s())

    def set_cookie(self, response: Response, name: str, value: str, max_age_s: int, http_only: bool) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age_s,
            path="/",
            secure=self.secure_cookie,
            httponly=http_only,
            samesite="strict",
        )

    def login_page(self, message: str = "", status_code: int = 200) -> Response:
        token = sessions.issue_login_token(self.secret, secrets.token_bytes(sessions.NONCE_BYTES))
        response = _page(render_login(token, message), status_code)
        self.set_cookie(response, LOGIN_COOKIE, token, LOGIN_TOKEN_TTL_S, http_only=True)
        return response

    def index(self, request: Request) -> Response:
        if not self.ready():
            return _not_ready()
        if self.auth_enabled and self.current_session(request) is None:
            return _redirect("/ui/login")
        return _page((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    def login_form(self, request: Request) -> Response:
        if not self.ready():
            return _not_ready()
        if not self.auth_enabled or self.current_session(request) is not None:
            return _redirect("/ui/")
        return self.login_page()

    async def login(self, request: Request) -> Response:
        if not self.ready():
            return _not_ready()
        if not self.auth_enabled:
            return _redirect("/ui/")
        body = await request.body()
        if len(body) > MAX_LOGIN_BODY_BYTES:
            return self.login_page("The form was too large.", 413)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        form_token = (fields.get("csrf_token") or [""])[0]
        api_key = (fields.get("api_key") or [""])[0].strip()
        if not sessions.verify_login_token(request.cookies.get(LOGIN_COOKIE), form_token, self.secret):
            return self.login_page("The login form expired. Please try again.", 403)
        login_subject = self._auth().login_subject
        subject = ""
        if not api_key:
            return self.login_page("That API key is not valid.", 401)
        if login_subject is not None:
            try:
                subject = await login_subject(request, api_key)
            except LoginRefused as refused:
                return self.login_page(refused.message, refused.status_code)
        elif not self.check_api_key(api_key):
            return self.login_page("That API key is not valid.", 401)
        nonce = secrets.token_bytes(sessions.NONCE_BYTES)
        new_session = sessions.issue_session(
            self.secret, self.clock_s(), nonce, self.session_ttl_s, subject=subject
        )
        response = _redirect("/ui/")
        self.set_cookie(response, SESSION_COOKIE, new_session.token, self.session_ttl_s, http_only=True)
        csrf = sessions.csrf_token_for(new_session.token, self.secret)
        self.set_cookie(response, CSRF_COOKIE, csrf, self.session_ttl_s, http_only=False)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    def logout(self) -> Response:
        if not self.ready():
            return _not_ready()
        # Forcing a logout is harmless and SameSite=Strict already stops it cross-site, so no token here.
        response = _redirect("/ui/login" if self.auth_enabled else "/ui/")
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.delete_cookie(name, path="/", secure=self.secure_cookie, samesite="strict")
        return response

    async def session_info(self, request: Request) -> Response:
        headers = {"Cache-Control": "no-store"}
        if not self.ready():
            return JSONResponse({"error": "Ripple is starting", "detail": None}, 503, headers=headers)
        if not self.auth_enabled:
            body = {
                "authEnabled": False,
                "authenticated": True,
                "csrfToken": "",
                "expiresAt": None,
                "key": None,
                "scope": "admin",
            }
            return JSONResponse(body, headers=headers)
        found = self.current_session(request)
        if found is None:
            return JSONResponse({"error": "not logged in", "detail": None}, 401, headers=headers)
        subject = found.subject or ADMIN_KEY_NAME
        scope: str | None = "admin"
        session_scope = self._auth().session_scope
        if found.subject and session_scope is not None:
            scope = await session_scope(request, found.subject)
        if scope is None:
            body = {"error": f"key '{subject}' of this session was revoked: log in again", "detail": None}
            return JSONResponse(body, 401, headers=headers)
        body = {
            "authEnabled": True,
            "authenticated": True,
            "csrfToken": sessions.csrf_token_for(found.token, self.secret),
            "expiresAt": found.expires_at_s,
            "key": subject,
            "scope": scope,
        }
        return JSONResponse(body, headers=headers)

    def static_file(self, name: str) -> Response:
        if name not in self.static_names:
            return JSONResponse({"error": f"no such file: {name}", "detail": None}, 404)
        path = STATIC_DIR / name
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(path.read_bytes(), media_type=_MEDIA_TYPES[path.suffix], headers=headers)


def build_ui_router(
    *,
    check_api_key: Callable[[str], bool],
    session_secret: bytes,
    secure_cookie: bool,
    auth_enabled: bool,
    clock_s: Callable[[], float] = time.time,
    session_ttl_s: int = sessions.DEFAULT_SESSION_TTL_S,
) -> APIRouter:
    """Build the ``/ui`` router.

    ``check_api_key(key) -> bool`` must compare in constant time. ``session_secret`` signs sessions and must
    be the same on every Serve replica. ``secure_cookie`` adds ``Secure`` to the cookies (set it behind
    HTTPS). With ``auth_enabled`` False the UI needs no login and shows that authentication is off.
    Raises ValueError for a secret shorter than 16 bytes while auth is on.
    """
    auth = UiAuth(check_api_key, session_secret, secure_cookie, auth_enabled)
    return build_ui_router_from(lambda: auth, clock_s=clock_s, session_ttl_s=session_ttl_s)


def build_ui_router_from(
    settings: Callable[[], UiAuth | None],
    *,
    clock_s: Callable[[], float] = time.time,
    session_ttl_s: int = sessions.DEFAULT_SESSION_TTL_S,
) -> APIRouter:
    """The ``/ui`` router with its auth settings read per request from ``settings()``.

    ``settings()`` returns None while the app is starting; the pages then answer 503.
    """
    ui = _UiRoutes(settings, clock_s, session_ttl_s)
    router = APIRouter(prefix="/ui", include_in_schema=False)
    router.add_api_route("", ui.index, methods=["GET"])
    router.add_api_route("/", ui.index, methods=["GET"])
    router.add_api_route("/login", ui.login_form, methods=["GET"])
    router.add_api_route("/login", ui.login, methods=["POST"])
    router.add_api_route("/logout", ui.logout, methods=["POST"])
    router.add_api_route("/session", ui.session_info, methods=["GET"])
    router.add_api_route("/static/{name}", ui.static_file, methods=["GET"])
    return router


class AppAuth(Protocol):
    """The part of the app's auth settings the UI reads (``orchestrator.auth.AuthConfig`` fits)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def session_secret(self) -> bytes: ...

    @property
    def secure_cookie(self) -> bool: ...

    def api_key_ok(self, presented: str) -> bool: ...


def verify_browser_request(request: Request, auth: AppAuth, now_s: float | None = None) -> bool:
    """True when ``request`` carries a valid UI session (and, unless it is a GET, a valid CSRF header)."""
    if not auth.session_secret:
        return False
    return sessions.verify_request(
        request.cookies.get(SESSION_COOKIE),
        request.headers.get(CSRF_HEADER),
        request.method,
        auth.session_secret,
        time.time() if now_s is None else now_s,
    )


def browser_subject(request: Request, auth: AppAuth, now_s: float | None = None) -> str | None:
    """The name of the key a valid UI session logged in with (CSRF-checked as
    :func:`verify_browser_request`), None without one; sessions from before named keys are the instance's
    API key's."""
    if not auth.session_secret:
        return None
    now = time.time() if now_s is None else now_s
    cookie = request.cookies.get(SESSION_COOKIE)
    if not sessions.verify_request(
        cookie, request.headers.get(CSRF_HEADER), request.method, auth.session_secret, now
    ):
        return None
    found = sessions.verify_session(cookie, auth.session_secret, now)
    return None if found is None else (found.subject or ADMIN_KEY_NAME)


def mount(api: FastAPI, state: Any) -> None:
    """Mount ``/ui`` on ``api`` for an app whose auth settings appear later, at ``state.boot.auth``.

    Sets ``state.ui_verify(request, auth) -> bool`` for the app's API-key dependency, so ``/api/v1`` and
    ``/v2`` accept a UI session cookie (with the CSRF header on non-GET methods) as well as a Bearer key.
    Until ``state.boot`` is set the pages answer 503.
    """

    async def login_subject(request: Request, key: str) -> str:
        who = await principal_of_key(state, queue_from(request, state), key)
        if who is None:
            raise LoginRefused("That API key is not valid.", 401)
        why = refusal(who, Family.UI)
        if why is not None:
            raise LoginRefused(f"That key may not use the web UI: {why}.", 403)
        return who.name

    async def session_scope(request: Request, subject: str) -> str | None:
        who = await principal_of_subject(state, queue_from(request, state), subject)
        return None if who is None else who.scope.value

    def settings() -> UiAuth | None:
        boot = getattr(state, "boot", None)
        if boot is None:
            return None
        auth: AppAuth = boot.auth
        named = isinstance(state, AppState)  # the app's own state knows the named keys
        return UiAuth(
            auth.api_key_ok,
            auth.session_secret,
            auth.secure_cookie,
            auth.enabled,
            login_subject=login_subject if named else None,
            session_scope=session_scope if named else None,
        )

    state.ui_verify = verify_browser_request
    state.ui_subject = browser_subject
    api.include_router(build_ui_router_from(settings))
