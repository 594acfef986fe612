"""Accounts on both backends: users, argon2id, throttling and lockout, TOTP replay,
reset tokens, sessions, and whose records a user may act for."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from openrecord.auth import totp
from openrecord.auth.accounts import AccountError, Accounts
from openrecord.auth.patients import may_act_for, patients_for
from openrecord.auth.sessions import IDLE_SECONDS, SessionStore
from openrecord.auth.throttle import Throttle, ThrottlePolicy
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store.base import Store

PASSWORD = "correct horse battery"
FAST = ThrottlePolicy(free_failures=2, delay_ms=40, lockout_after=5, lockout_ms=60_000)


@pytest.fixture()
def accounts(store: Store) -> Accounts:
    return Accounts(store, Throttle(store, FAST))


def test_passwords_are_stored_as_argon2id_and_checked(accounts: Accounts, store: Store) -> None:
    user = accounts.create_user("Alice", PASSWORD, "Patient/p1")
    assert user.username == "alice"  # case-folded
    (stored,) = store.query("SELECT password_hash FROM account_user WHERE id = ?", (user.id,))[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.login("ALICE", PASSWORD, "10.0.0.1").user == user
    wrong = accounts.login("alice", PASSWORD + "x", "10.0.0.1")
    unknown = accounts.login("nobody", PASSWORD, "10.0.0.1")
    assert wrong.user is None and unknown.user is None
    assert wrong.refusal == unknown.refusal  # no hint which usernames exist
    assert wrong.outcome == unknown.outcome == "failed"


def test_account_rules(accounts: Accounts) -> None:
    accounts.create_user("bob", PASSWORD, "Practitioner/d1")
    with pytest.raises(AccountError, match="taken"):
        accounts.create_user("BOB", PASSWORD, "Patient/p1")
    with pytest.raises(AccountError, match="at least 10"):
        accounts.create_user("carol", "short", "Patient/p1")
    with pytest.raises(AccountError, match="fhirUser"):
        accounts.create_user("carol", PASSWORD, "Observation/o1")
    with pytest.raises(AccountError, match="fhirUser"):
        accounts.create_user("carol", PASSWORD, "Patient/../x")
    with pytest.raises(AccountError, match="username"):
        accounts.create_user("carol smith", PASSWORD, "Patient/p1")


def test_throttle_delays_exponentially_then_locks(store: Store) -> None:
    throttle = Throttle(store, FAST)
    t = 1_000_000
    for _ in (1, 2):  # free failures: no wait
        assert throttle.admit("login:x", "ip:a", t) is None
        assert throttle.failed("login:x", "ip:a", t) is None
    waits = []
    for _ in range(2):  # third and fourth failures: 40 ms, then 80 ms
        assert throttle.admit("login:x", "ip:a", t) is None
        refusal = throttle.failed("login:x", "ip:a", t)
        assert refusal is not None and refusal.kind == "wait"
        waits.append(refusal.until_ms - t)
        early = throttle.admit("login:x", "ip:a", refusal.until_ms - 1)
        assert early is not None and early.kind == "wait"
        t = refusal.until_ms
    assert waits == [40, 80]
    assert throttle.admit("login:x", "ip:a", t) is None
    locked = throttle.failed("login:x", "ip:a", t)  # fifth failure
    assert locked is not None and locked.kind == "locked" and locked.until_ms == t + 60_000
    later = throttle.admit("login:x", "ip:a", t + 59_999)
    assert later is not None and later.kind == "locked"
    assert "locked" in later.message(t) and "1 more minute" in later.message(t)
    assert throttle.admit("login:x", "ip:a", t + 60_001) is None
    # the address was slowed by none of this (20 free failures), another account is free
    assert throttle.admit("login:y", "ip:a", t) is None


def test_parallel_attempts_on_one_account_are_serialised(store: Store) -> None:
    throttle = Throttle(store, FAST)
    assert throttle.admit("login:z", None, 5_000) is None
    second = throttle.admit("login:z", None, 5_001)  # the first is still being checked
    assert second is not None and second.kind == "wait"
    throttle.succeeded("login:z")
    assert throttle.admit("login:z", None, 5_002) is None


def test_login_lockout_holds_even_for_the_right_password(accounts: Accounts) -> None:
    accounts.create_user("dave", PASSWORD, "Patient/p1")
    messages = []
    for _ in range(5):
        result = accounts.login("dave", "wrong password!", "10.0.0.2")
        assert result.user is None
        messages.append(result.refusal)
        time.sleep(0.2)  # past each delay (40, 80 ms…)
    assert "locked" in (messages[-1] or "")
    locked = accounts.login("dave", PASSWORD, "10.0.0.2")
    assert locked.user is None and "locked" in (locked.refusal or "")
    # an unknown username locks the same way
    for _ in range(5):
        accounts.login("ghost", "wrong password!", "10.0.0.3")
        time.sleep(0.2)
    assert "locked" in (accounts.login("ghost", "x" * 12, "10.0.0.3").refusal or "")


def test_totp_codes_work_once_and_are_throttled(accounts: Accounts) -> None:
    user = accounts.create_user("erin", PASSWORD, "Patient/p1")
    secret = totp.new_secret()
    assert not accounts.enable_totp(
        user.id,
        secret,
        "000000" if totp.totp(totp.secret_bytes(secret), time.time()) != "000000" else "111111",
    )
    code = totp.totp(totp.secret_bytes(secret), time.time())
    assert accounts.enable_totp(user.id, secret, code)
    assert accounts.get(user.id).totp_enabled  # type: ignore[union-attr]
    # the enrolment code is spent: the same code cannot sign in
    assert accounts.check_totp(user.id, code, "10.0.0.4") is not None
    time.sleep(0.1)
    later = totp.totp(totp.secret_bytes(secret), time.time() + 30)  # next step (window 1)
    assert accounts.check_totp(user.id, later, "10.0.0.4") is None
    assert accounts.check_totp(user.id, later, "10.0.0.4") is not None  # replay


def test_reset_tokens_are_hashed_single_use_and_expire(accounts: Accounts, store: Store) -> None:
    user = accounts.create_user("frank", PASSWORD, "Patient/p1")
    for _ in range(5):
        accounts.login("frank", "wrong password!", None)
        time.sleep(0.2)
    token = accounts.issue_reset(user.id)
    rows = store.query("SELECT token_hash FROM account_reset")
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(),)]
    assert accounts.reset_token_user(token) == user
    with pytest.raises(AccountError, match="at least"):
        accounts.reset_password(token, "short")
    accounts.reset_password(token, "a brand new passphrase")
    with pytest.raises(AccountError, match="expired or was used"):
        accounts.reset_password(token, "another new passphrase")
    # the lockout is lifted and the new password works
    assert accounts.login("frank", "a brand new passphrase", None).user == user
    expired = accounts.issue_reset(user.id, seconds=-1)
    assert accounts.reset_token_user(expired) is None
    with pytest.raises(AccountError):
        accounts.reset_password(expired, "yet another passphrase")


def test_sessions_rotate_and_expire(store: Store) -> None:
    sessions = SessionStore(store)
    anon = sessions.create({"request": "r1"})
    assert sessions.load(anon.id) is not None
    rows = store.query("SELECT id_hash FROM account_session")
    assert anon.id not in {r[0] for r in rows}  # only the hash is kept
    promoted = sessions.promote(anon, user_id="u1", stage="password")
    assert promoted.id != anon.id and promoted.csrf != anon.csrf
    assert sessions.load(anon.id) is None  # the planted id is dead
    loaded = sessions.load(promoted.id)
    assert loaded is not None and loaded.stage == "password" and loaded.data == {"request": "r1"}
    assert loaded.csrf_ok(promoted.csrf) and not loaded.csrf_ok(anon.csrf)
    assert not loaded.csrf_ok(None) and not loaded.csrf_ok("")
    assert sessions.load(promoted.id, now=int(time.time()) + IDLE_SECONDS + 1) is None
    sessions.delete_for_user("u1")
    assert sessions.load(promoted.id) is None


def _put(records: RecordService, body: dict[str, Any]) -> None:
    records.update(SecurityContext.open(), body["resourceType"], body["id"], body)


def test_who_a_user_may_act_for(store: Store) -> None:
    records = RecordService(store)
    for pid, name in (("mum", "Mary"), ("kid", "Kim"), ("gran", "Greta"), ("other", "Otto")):
        _put(records, {"resourceType": "Patient", "id": pid, "name": [{"given": [name]}]})
    _put(records, {"resourceType": "Patient", "id": "gone", "active": False})
    _put(
        records,
        {
            "resourceType": "RelatedPerson",
            "id": "mum-of-kid",
            "patient": {"reference": "Patient/kid"},
        },
    )
    _put(
        records,
        {
            "resourceType": "RelatedPerson",
            "id": "carer-of-gran",
            "patient": {"reference": "Patient/gran"},
            "period": {"start": "2020-01-01"},
        },
    )
    _put(
        records,
        {
            "resourceType": "RelatedPerson",
            "id": "ended",
            "patient": {"reference": "Patient/other"},
            "period": {"end": "2021-01-01"},
        },
    )
    _put(
        records,
        {
            "resourceType": "RelatedPerson",
            "id": "inactive",
            "active": False,
            "patient": {"reference": "Patient/other"},
        },
    )
    _put(
        records,
        {
            "resourceType": "Person",
            "id": "mary",
            "link": [
                {"target": {"reference": "Patient/mum"}},
                {"target": {"reference": "RelatedPerson/mum-of-kid"}},
                {"target": {"reference": "RelatedPerson/carer-of-gran"}},
                {"target": {"reference": "RelatedPerson/ended"}},
                {"target": {"reference": "RelatedPerson/inactive"}},
                {"target": {"reference": "Patient/gone"}},
            ],
        },
    )
    _put(records, {"resourceType": "Practitioner", "id": "doc"})
    _put(
        records,
        {
            "resourceType": "Patient",
            "id": "p-of-doc",
            "generalPractitioner": [{"reference": "Practitioner/doc"}],
        },
    )

    def ids(fhir_user: str) -> list[str]:
        return [c.id for c in patients_for(records, fhir_user)]

    assert ids("Person/mary") == ["mum", "kid", "gran"]
    # the Patient herself reaches what her Person links to
    assert ids("Patient/mum") == ["mum", "kid", "gran"]
    assert ids("RelatedPerson/mum-of-kid") == ["kid", "mum", "gran"]
    assert ids("Patient/other") == ["other"]
    assert ids("RelatedPerson/ended") == []
    assert ids("Practitioner/doc") == ["p-of-doc"]
    assert ids("Patient/nobody") == []
    choices = {c.id: c for c in patients_for(records, "Person/mary")}
    assert choices["kid"].name == "Kim" and choices["kid"].relation == "you act for them"
    assert may_act_for(records, "Patient/mum", "kid")
    assert not may_act_for(records, "Patient/mum", "other")
    assert not may_act_for(records, "Practitioner/doc", "mum")


def test_cookies_are_secure_except_plain_http_on_loopback() -> None:
    from openrecord.auth.sessions import cookie_name, cookie_secure

    assert cookie_secure("https", "127.0.0.1") and cookie_secure("https", "records.example.org")
    assert cookie_secure("http", "records.example.org") and cookie_secure("http", "10.0.0.5")
    for loopback in ("127.0.0.1", "127.1.2.3", "localhost", "[::1]", "::1"):
        assert not cookie_secure("http", loopback)
    assert cookie_name(True) == "__Host-openrecord-session"
    assert cookie_name(False) == "openrecord-session"


@pytest.mark.parametrize(
    ("scope", "text"),
    [
        (
            "patient/Observation.rs",
            "Read and search observations (measurements, vital signs"
            " and test results) of the selected patient.",
        ),
        (
            "patient/Observation.read",
            "Read and search observations (measurements, vital signs"
            " and test results) of the selected patient.",
        ),
        (
            "user/*.cruds",
            "Add, read, change, delete and search all kinds of health records that you can see.",
        ),
        (
            "patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category"
            "|problem-list-item",
            "Read and search conditions and diagnoses of the selected"
            " patient, only where category = problem-list-item.",
        ),
        ("system/Flag.c", "Add Flag records of everyone on this server."),
        ("offline_access", "Keep access when you are not using the app, until you disconnect it."),
        ("launch/patient", "Tell the app whose record you chose."),
    ],
)
def test_scopes_in_plain_words(scope: str, text: str) -> None:
    from openrecord.auth.scope_text import describe_scope

    described = describe_scope(scope)
    assert described.text == text and described.scope == scope
    assert described.data == ("/" in scope and not scope.startswith("launch"))
