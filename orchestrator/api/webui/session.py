"""Stateless browser sessions and CSRF tokens for the operator web UI.

A session is an HMAC-signed, time-limited token, so any Serve replica that knows the secret can check it
without a server-side store. Layout (ASCII, cookie-safe)::

    v1.<expires_at_s>.<nonce>.<signature>                      (a session of the instance's API key)
    v1.<expires_at_s>.<nonce>.<subject>.<signature>            (a session of the named key ``subject``)

where ``signature = base64url(HMAC-SHA256(secret, "session|v1|<expires_at_s>|<nonce>"))`` or, with a
subject (base64url of the key's name), ``"session|v1|<expires_at_s>|<nonce>|<subject>"``. The app checks on
every request that the subject's key still exists, so revoking a key ends its sessions.

The CSRF token of a session is derived from it (``HMAC(secret, "csrf" + session)``), so it needs no storage
either; pages read it from ``GET /ui/session`` or the non-HttpOnly ``ripple_csrf`` cookie and send it in the
``X-CSRF-Token`` header on every mutating request. The login form, which runs before any session exists, is
protected by a double-submit token: the same signed value in a cookie and in a hidden form field.

Everything here is pure: the clock and the randomness come in as arguments, nothing reads the environment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

SESSION_VERSION = "v1"
DEFAULT_SESSION_TTL_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NONCE_BYTES = 18
# Upper bound on a token we are willing to parse; real ones are ~90 characters.
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class Session:
    """A verified session: the raw token and when it stops being valid (epoch seconds)."""

    token: str
    expires_at_s: int
    subject: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(secret: bytes, message: str) -> str:
    return _b64(hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest())


def issue_session(
    secret: bytes, now_s: float, nonce: bytes, ttl_s: int = DEFAULT_SESSION_TTL_S, subject: str = ""
) -> Session:
    """Mint a session token valid for ``ttl_s`` seconds from ``now_s``, for the key named ``subject``
    (empty: the instance's API key).

    ``nonce`` must come from a CSPRNG (``secrets.token_bytes(NONCE_BYTES)``); it makes every token unique.
    Raises ValueError for an empty secret, a short nonce or a non-positive ttl.
    """
    if not secret:
        raise ValueError("session secret must not be empty")
    if len(nonce) < 16:
        raise ValueError(f"nonce must be at least 16 bytes, got {len(nonce)}")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    expires_at_s = int(now_s) + ttl_s
    nonce_text = _b64(nonce)
    if not subject:
        signature = _mac(secret, f"session|{SESSION_VERSION}|{expires_at_s}|{nonce_text}")
        return Session(f"{SESSION_VERSION}.{expires_at_s}.{nonce_text}.{signature}", expires_at_s)
    subject_text = _b64(subject.encode("utf-8"))
    signature = _mac(secret, f"session|{SESSION_VERSION}|{expires_at_s}|{nonce_text}|{subject_text}")
    token = f"{SESSION_VERSION}.{expires_at_s}.{nonce_text}.{subject_text}.{signature}"
    return Session(token, expires_at_s, subject)


def verify_session(token: str | None, secret: bytes, now_s: float) -> Session | None:
    """Return the session when ``token`` is well formed, signed with ``secret`` and not expired, else None."""
    if not token or not secret or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) not in (4, 5) or parts[0] != SESSION_VERSION or not parts[1].isdigit():
        return None
    expires_text, nonce_text, signature = parts[1], parts[2], parts[-1]
    message = f"session|{SESSION_VERSION}|{expires_text}|{nonce_text}"
    if len(parts) == 5:
        if not parts[3]:
            return None
        message += f"|{parts[3]}"
    expected = _mac(secret, message)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        return None
    expires_at_s = int(expires_text)
    if now_s >= expires_at_s:
        return None
    subject = ""
    if len(parts) == 5:
        try:
            subject = base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return Session(token, expires_at_s, subject)


def csrf_token_for(session_token: str, secret: bytes) -> str:
    """The CSRF token bound to one session token (deterministic, so nothing needs to be stored)."""
    return _mac(secret, "csrf" + session_token)


def verify_request(
    cookie_value: str | None, csrf_header: str | None, method: str, secret: bytes, now_s: float
) -> bool:
    """Decide whether a browser request carrying a session cookie is authenticated.

    True when ``cookie_value`` is a valid, unexpired session and, for any method other than GET, HEAD or
    OPTIONS, ``csrf_header`` equals the session's CSRF token (compared in constant time).
    """
    session = verify_session(cookie_value, secret, now_s)
    if session is None:
        return False
    if method.upper() in SAFE_METHODS:
        return True
    if not csrf_header:
        return False
    expected = csrf_token_for(session.token, secret)
    return hmac.compare_digest(expected.encode("ascii"), csrf_header.encode("ascii", "replace"))


def issue_login_token(secret: bytes, nonce: bytes) -> str:
    """A signed double-submit token for the login form: sent both as a cookie and as a hidden field."""
    if len(nonce) < 16:
        raise ValueError(f"nonce must be at least 16 bytes, got {len(nonce)}")
    nonce_text = _b64(nonce)
    return f"{nonce_text}.{_mac(secret, 'login|' + nonce_text)}"


def verify_login_token(cookie_value: str | None, form_value: str | None, secret: bytes) -> bool:
    """True when the login form's token matches its cookie and carries our signature.

    The signature stops a token planted by another site (cookie tossing) from passing as ours.
    """
    if not cookie_value or not form_value or len(cookie_value) > MAX_TOKEN_CHARS:
        return False
    if not hmac.compare_digest(
        cookie_value.encode("ascii", "replace"), form_value.encode("ascii", "replace")
    ):
        return False
    nonce_text, _, signature = cookie_value.partition(".")
    expected = _mac(secret, "login|" + nonce_text)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))
