"""processors/accounts.py with plain data: passwords, sessions, CSRF tokens, roles."""

from __future__ import annotations

import pytest

from processors.accounts import (
    Denied,
    Page,
    Role,
    User,
    check_username,
    csrf_token,
    csrf_valid,
    hash_password,
    open_session,
    password_matches,
    session_cookie,
)

KEY = b"k" * 32


def test_passwords_are_salted_scrypt_hashes() -> None:
    stored = hash_password("rahasia-bkpsdm")
    assert stored.startswith("scrypt$16384$8$1$") and "rahasia" not in stored
    assert stored != hash_password("rahasia-bkpsdm")  # a salt of its own
    assert password_matches("rahasia-bkpsdm", stored)
    assert not password_matches("rahasia-bkpsdX", stored)
    assert not password_matches("rahasia-bkpsdm", "md5$abc") and not password_matches("x", "")
    with pytest.raises(ValueError, match="at least 10"):
        hash_password("pendek")


def test_a_session_is_ours_whole_and_current() -> None:
    cookie = session_cookie(KEY, "siti", now=1000.0, lifetime_s=60)
    session = open_session(KEY, cookie, now=1059.0)
    assert session is not None and session.username == "siti"
    assert open_session(KEY, cookie, now=1060.0) is None  # expired
    assert open_session(b"x" * 32, cookie, now=1000.0) is None  # not signed by us
    body, mac = cookie.rsplit(".", 1)
    forged = session_cookie(b"x" * 32, "admin", 1000.0, 60).rsplit(".", 1)[0]
    for bad in (f"{forged}.{mac}", body, "", None, "a.b", "x" * 600):
        assert open_session(KEY, bad, now=1000.0) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    mine = open_session(KEY, session_cookie(KEY, "siti", 0, 60), 1)
    other = open_session(KEY, session_cookie(KEY, "siti", 0, 60), 1)
    assert mine is not None and other is not None
    assert csrf_valid(KEY, mine, csrf_token(KEY, mine))
    assert not csrf_valid(KEY, mine, csrf_token(KEY, other))
    assert not csrf_valid(KEY, mine, None) and not csrf_valid(KEY, mine, "")


def test_roles_see_their_pages_and_office_heads_only_their_office() -> None:
    admin = User("a", Role.ADMIN)
    reviewer = User("r", Role.REVIEWER)
    head = User("h", Role.OFFICE_HEAD, "DINKES")
    assert all(admin.may_see(p) for p in Page)
    assert reviewer.may_see(Page.REVIEW) and not reviewer.may_see(Page.TPP)
    assert head.may_see(Page.REQUESTS) and not head.may_see(Page.REVIEW)
    assert not head.may_see(Page.ALERTS)
    assert head.office_scope(None) == "DINKES" == head.office_scope("DINKES")
    with pytest.raises(Denied):
        head.office_scope("SETDA")
    assert admin.office_scope("SETDA") == "SETDA" and admin.office_scope("") is None
    assert admin.sees_selfies and reviewer.sees_selfies and not head.sees_selfies
    with pytest.raises(ValueError, match="exactly one office"):
        User("h", Role.OFFICE_HEAD)
    with pytest.raises(ValueError, match="exactly one office"):
        User("r", Role.REVIEWER, "SETDA")


def test_usernames_are_plain() -> None:
    assert check_username("siti.rahma_1") == "siti.rahma_1"
    for bad in ("", "a b", "x" * 65, "<script>"):
        with pytest.raises(ValueError):
            check_username(bad)
