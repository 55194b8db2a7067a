"""Web UI sessions, CSRF and the /ui router, on a bare FastAPI app with a fake key check."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from orchestrator.api.webui import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    build_ui_router,
    mount,
    verify_request,
)
from orchestrator.api.webui import session as s
from orchestrator.api.webui.routes import LOGIN_COOKIE, STATIC_DIR

pytestmark = pytest.mark.timeout(30)

SECRET = b"0123456789abcdef0123456789abcdef"
API_KEY = "rk_test_key_5b1f0e2c9d7a"
NONCE = bytes(range(18))
NOW_S = 1_700_000_000.0


class FakeClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def check_key(candidate: str) -> bool:
    return hmac.compare_digest(candidate.encode(), API_KEY.encode())


def make_client(
    *, auth_enabled: bool = True, secure: bool = False, clock: FakeClock | None = None
) -> TestClient:
    app = FastAPI()
    router = build_ui_router(
        check_api_key=check_key,
        session_secret=SECRET,
        secure_cookie=secure,
        auth_enabled=auth_enabled,
        clock_s=clock or FakeClock(NOW_S),
    )
    app.include_router(router)
    base_url = "https://testserver" if secure else "http://testserver"
    return TestClient(app, base_url=base_url, follow_redirects=False)


def login_token(client: TestClient) -> str:
    page = client.get("/ui/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def log_in(client: TestClient, key: str = API_KEY) -> object:
    token = login_token(client)
    return client.post("/ui/login", data={"api_key": key, "csrf_token": token})


def set_cookie_headers(response: object) -> list[str]:
    return response.headers.get_list("set-cookie")  # type: ignore[attr-defined,no-any-return]


# --- sessions and CSRF (pure) -----------------------------------------------------------------------------


def test_issued_session_verifies_until_expiry() -> None:
    issued = s.issue_session(SECRET, NOW_S, NONCE, ttl_s=60)
    assert issued.expires_at_s == int(NOW_S) + 60
    assert s.verify_session(issued.token, SECRET, NOW_S) == issued
    assert s.verify_session(issued.token, SECRET, NOW_S + 59) is not None
    assert s.verify_session(issued.token, SECRET, NOW_S + 60) is None


def test_session_is_bound_to_secret_and_untamperable() -> None:
    token = s.issue_session(SECRET, NOW_S, NONCE).token
    assert s.verify_session(token, b"another-secret-of-enough-length", NOW_S) is None
    version, expires, nonce, signature = token.split(".")
    longer = f"{version}.{int(expires) + 10_000}.{nonce}.{signature}"
    assert s.verify_session(longer, SECRET, NOW_S) is None
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert s.verify_session(f"{version}.{expires}.{nonce}.{flipped}", SECRET, NOW_S) is None
    for junk in (None, "", "v1", "v1.x.y.z", "v2." + token[3:], token + ".", "é" * 10, "a" * 1000):
        assert s.verify_session(junk, SECRET, NOW_S) is None


def test_sessions_differ_by_nonce() -> None:
    first = s.issue_session(SECRET, NOW_S, NONCE).token
    second = s.issue_session(SECRET, NOW_S, bytes(reversed(NONCE))).token
    assert first != second


def test_issue_session_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="secret"):
        s.issue_session(b"", NOW_S, NONCE)
    with pytest.raises(ValueError, match="nonce"):
        s.issue_session(SECRET, NOW_S, b"short")
    with pytest.raises(ValueError, match="ttl_s"):
        s.issue_session(SECRET, NOW_S, NONCE, ttl_s=0)


def test_verify_request_needs_csrf_only_on_mutating_methods() -> None:
    token = s.issue_session(SECRET, NOW_S, NONCE).token
    csrf = s.csrf_token_for(token, SECRET)
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert verify_request(token, None, method, SECRET, NOW_S)
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        assert verify_request(token, csrf, method, SECRET, NOW_S)
        assert not verify_request(token, None, method, SECRET, NOW_S)
        assert not verify_request(token, "", method, SECRET, NOW_S)
        assert not verify_request(token, csrf[:-1] + "x", method, SECRET, NOW_S)
    other = s.issue_session(SECRET, NOW_S, bytes(reversed(NONCE))).token
    assert not verify_request(token, s.csrf_token_for(other, SECRET), "POST", SECRET, NOW_S)
    assert not verify_request(None, csrf, "GET", SECRET, NOW_S)
    assert not verify_request(token, csrf, "POST", SECRET, NOW_S + s.DEFAULT_SESSION_TTL_S)


def test_login_token_double_submit() -> None:
    token = s.issue_login_token(SECRET, NONCE)
    assert s.verify_login_token(token, token, SECRET)
    assert not s.verify_login_token(token, None, SECRET)
    assert not s.verify_login_token(None, token, SECRET)
    other = s.issue_login_token(SECRET, bytes(reversed(NONCE)))
    assert not s.verify_login_token(token, other, SECRET)
    forged = token.split(".")[0] + ".forged"
    assert not s.verify_login_token(forged, forged, SECRET)
    assert not s.verify_login_token(token, token, b"another-secret-of-enough-length")


# --- the router -------------------------------------------------------------------------------------------


def test_index_redirects_to_login_without_session() -> None:
    client = make_client()
    for path in ("/ui", "/ui/"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login"
    assert client.get("/ui/session").status_code == 401


def test_login_with_right_key_sets_safe_cookies_and_redirects() -> None:
    client = make_client()
    response = log_in(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookies = {c.split("=", 1)[0]: c for c in set_cookie_headers(response)}
    session_cookie = cookies[SESSION_COOKIE].lower()
    assert "httponly" in session_cookie
    assert "samesite=strict" in session_cookie
    assert "path=/" in session_cookie
    assert "secure" not in session_cookie
    csrf_cookie = cookies[CSRF_COOKIE].lower()
    assert "httponly" not in csrf_cookie and "samesite=strict" in csrf_cookie
    page = client.get("/ui/")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers
    info = client.get("/ui/session").json()
    assert info["authEnabled"] is True and info["authenticated"] is True
    session_token = client.cookies.get(SESSION_COOKIE)
    assert info["csrfToken"] == client.cookies.get(CSRF_COOKIE)
    assert verify_request(session_token, info["csrfToken"], "POST", SECRET, NOW_S)


def test_secure_flag_when_asked() -> None:
    client = make_client(secure=True)
    response = log_in(client)
    cookies = {c.split("=", 1)[0]: c.lower() for c in set_cookie_headers(response)}
    assert response.status_code == 303
    assert "secure" in cookies[SESSION_COOKIE]
    assert "secure" in cookies[CSRF_COOKIE]


def test_wrong_key_is_401_with_message_and_no_session() -> None:
    client = make_client()
    response = log_in(client, "not-the-key")
    assert response.status_code == 401
    assert "not valid" in response.text
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/ui/").status_code == 303


def test_login_post_requires_the_double_submit_token() -> None:
    client = make_client()
    login_token(client)
    missing = client.post("/ui/login", data={"api_key": API_KEY})
    assert missing.status_code == 403
    wrong = client.post("/ui/login", data={"api_key": API_KEY, "csrf_token": "abc.def"})
    assert wrong.status_code == 403
    fresh = make_client()  # a form token without its cookie, as a cross-site form would post
    token = login_token(client)
    assert fresh.post("/ui/login", data={"api_key": API_KEY, "csrf_token": token}).status_code == 403
    assert SESSION_COOKIE not in client.cookies and SESSION_COOKIE not in fresh.cookies


def test_logout_clears_the_session() -> None:
    client = make_client()
    log_in(client)
    assert client.get("/ui/").status_code == 200
    response = client.post("/ui/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/ui/").status_code == 303


def test_session_expires() -> None:
    clock = FakeClock(NOW_S)
    client = make_client(clock=clock)
    log_in(client)
    assert client.get("/ui/").status_code == 200
    clock.now_s += s.DEFAULT_SESSION_TTL_S + 1
    assert client.get("/ui/").status_code == 303
    assert client.get("/ui/session").status_code == 401


def test_insecure_mode_needs_no_login() -> None:
    client = make_client(auth_enabled=False)
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/login").status_code == 303
    info = client.get("/ui/session").json()
    assert info["authEnabled"] is False
    assert "Authentication is off" in client.get("/ui/").text


def test_static_files_are_an_allow_list() -> None:
    client = make_client()
    app_js = client.get("/ui/static/app.js")
    assert app_js.status_code == 200
    assert app_js.headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/style.css").headers["content-type"].startswith("text/css")
    for name in ("login.html", "index.html", "..%2Froutes.py", "nope.js", "session.py"):
        assert client.get(f"/ui/static/{name}").status_code == 404


def test_no_key_or_secret_in_any_served_page() -> None:
    client = make_client()
    log_in(client)
    pages = [client.get("/ui/"), client.get("/ui/session"), make_client().get("/ui/login")]
    pages += [client.get(f"/ui/static/{p.name}") for p in STATIC_DIR.iterdir() if p.suffix in {".js", ".css"}]
    assert len(pages) > 8
    for page in pages:
        assert page.status_code == 200
        assert API_KEY not in page.text
        assert SECRET.decode() not in page.text
    bad = log_in(make_client(), API_KEY + "x")
    assert API_KEY not in bad.text


def test_pages_reference_only_local_assets() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
        assert "<script>" not in text  # inline scripts would break the Content-Security-Policy


def test_login_cookie_is_dropped_after_login() -> None:
    client = make_client()
    log_in(client)
    assert LOGIN_COOKIE not in client.cookies


def test_build_refuses_a_weak_secret() -> None:
    with pytest.raises(ValueError, match="session_secret"):
        build_ui_router(
            check_api_key=check_key, session_secret=b"short", secure_cookie=False, auth_enabled=True
        )


def test_csrf_header_name_is_the_one_the_page_sends() -> None:
    api_js = (Path(STATIC_DIR) / "api.js").read_text(encoding="utf-8")
    assert f'"{CSRF_HEADER}"' in api_js


# --- mount(): the app's adapter, with settings that appear once the replica starts -------------------------


@dataclass(frozen=True)
class FakeAuth:
    enabled: bool
    session_secret: bytes
    secure_cookie: bool = False

    def api_key_ok(self, presented: str) -> bool:
        return check_key(presented)


@dataclass
class FakeBoot:
    auth: FakeAuth


@dataclass
class FakeState:
    boot: FakeBoot | None = None
    ui_verify: Callable[[Request, FakeAuth], bool] | None = None


def make_mounted_app(state: FakeState) -> TestClient:
    app = FastAPI()
    mount(app, state)

    def require(request: Request) -> None:
        assert state.boot is not None
        auth = state.boot.auth
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if auth.api_key_ok(bearer) or (state.ui_verify is not None and state.ui_verify(request, auth)):
            return
        raise HTTPException(401, "no")

    @app.get("/api/v1/things", dependencies=[Depends(require)])
    def things() -> dict[str, str]:
        return {"ok": "get"}

    @app.post("/api/v1/things", dependencies=[Depends(require)])
    def make_thing() -> dict[str, str]:
        return {"ok": "post"}

    return TestClient(app, follow_redirects=False)


def test_mount_answers_503_until_the_app_is_ready_then_logs_in() -> None:
    state = FakeState()
    client = make_mounted_app(state)
    assert client.get("/ui/").status_code == 503
    assert client.get("/ui/session").status_code == 503
    state.boot = FakeBoot(FakeAuth(True, SECRET))
    assert log_in(client).status_code == 303
    assert state.ui_verify is not None
    assert client.get("/api/v1/things").json() == {"ok": "get"}
    assert client.post("/api/v1/things").status_code == 401  # no CSRF header
    csrf = client.get("/ui/session").json()["csrfToken"]
    assert client.post("/api/v1/things", headers={CSRF_HEADER: csrf}).json() == {"ok": "post"}
    assert make_mounted_app(state).get("/api/v1/things").status_code == 401  # no cookie at all


def test_mount_in_insecure_mode() -> None:
    state = FakeState(FakeBoot(FakeAuth(False, b"")))
    client = make_mounted_app(state)
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/session").json()["authEnabled"] is False
    assert state.ui_verify is not None
    bare = Request({"type": "http", "method": "GET", "path": "/api/v1/things", "headers": []})
    assert not state.ui_verify(bare, FakeAuth(False, b""))
