"""Dashboard accounts as plain rules: password hashes, session cookies, CSRF tokens and what
each role may see (DESIGN.md, "The web dashboard"). No I/O; the clock is a parameter.

- Passwords are hashed with scrypt (memory-hard: 16 MiB a try), each with its own salt.
- A session is a signed cookie naming the user, when it expires and a random nonce; the user's
  role and office are looked up on every request, so a changed or disabled account takes
  effect at once.
- A form's CSRF token is an HMAC of the session's nonce: a page of another site can neither
  read it nor make it.
- ``admin`` sees everything; ``reviewer`` alerts, the review queue and its selfies;
  ``office_head`` only their own office's attendance, TPP and requests.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB of memory per hash
PASSWORD_MIN = 10


class Role(enum.StrEnum):
    ADMIN = "admin"  # BKPSDM: everything, months, accounts
    REVIEWER = "reviewer"  # compliance / inspectorate
    OFFICE_HEAD = "office_head"  # one office's ASN only


class Page(enum.StrEnum):
    TODAY = "hari-ini"
    ALERTS = "peringatan"
    REVIEW = "tinjauan"
    REQUESTS = "permohonan"
    MAP = "peta"
    TPP = "tpp"
    DISCIPLINE = "disiplin"


PAGES: dict[Role, frozenset[Page]] = {
    Role.ADMIN: frozenset(Page),
    Role.REVIEWER: frozenset({Page.TODAY, Page.ALERTS, Page.REVIEW, Page.MAP}),
    Role.OFFICE_HEAD: frozenset({Page.TODAY, Page.REQUESTS, Page.MAP, Page.TPP,
                                 Page.DISCIPLINE}),
}


class Denied(Exception):
    """What the signed-in user may not see or do (403, or 503 for a refusal that is only for
    now); the message is for them (Bahasa)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    office_id: str = ""
    password_hash: str = ""
    disabled: bool = False

    def __post_init__(self) -> None:
        if (self.role is Role.OFFICE_HEAD) != bool(self.office_id):
            raise ValueError("an office head has exactly one office; other roles none")

    def may_see(self, page: Page) -> bool:
        return page in PAGES[self.role]

    def office_scope(self, asked: str | None) -> str | None:
        """The office a query is limited to: an office head's own, whatever was asked (asking
        for another is Denied); for the others the office asked for, or None (all)."""
        if self.role is not Role.OFFICE_HEAD:
            return asked or None
        if asked and asked != self.office_id:
            raise Denied("Anda hanya dapat melihat data kantor Anda sendiri.")
        return self.office_id

    @property
    def sees_selfies(self) -> bool:
        return self.role in (Role.ADMIN, Role.REVIEWER)


def check_username(name: str) -> str:
    if not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "._-" for c in name):
        raise ValueError(f"username {name!r}: 1 to 64 letters, digits, '.', '_' or '-'")
    return name


def hash_password(password: str, salt: bytes | None = None) -> str:
    if len(password) < PASSWORD_MIN:
        raise ValueError(f"a password has at least {PASSWORD_MIN} characters")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode()[:1024], salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass(frozen=True)
class Session:
    username: str
    expires: float  # epoch seconds
    nonce: str


def _sign(key: bytes, text: str) -> str:
    mac = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def session_cookie(key: bytes, username: str, now: float, lifetime_s: float) -> str:
    text = f"{username}|{int(now + lifetime_s)}|{secrets.token_urlsafe(16)}"
    return f"{base64.urlsafe_b64encode(text.encode()).decode()}.{_sign(key, text)}"


def open_session(key: bytes, cookie: str | None, now: float) -> Session | None:
    """The session a cookie holds, if it is ours, whole and not expired."""
    if not cookie or "." not in cookie or len(cookie) > 512:
        return None
    body, mac = cookie.rsplit(".", 1)
    try:
        text = base64.urlsafe_b64decode(body.encode()).decode()
        username, expires, nonce = text.split("|")
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(mac, _sign(key, text)) or int(expires) <= now:
        return None
    return Session(username, float(expires), nonce)


def csrf_token(key: bytes, session: Session) -> str:
    return _sign(key, f"csrf|{session.nonce}")


def csrf_valid(key: bytes, session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(token or "", csrf_token(key, session))
