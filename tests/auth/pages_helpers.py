"""A browser's part of a standalone launch, done with httpx over the real pages: read
each form's hidden fields, post them back, follow the redirects by hand. TOTP codes
are computed here from RFC 6238 (HMAC-SHA1, 30 s, 6 digits), independently of the
server's code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

import httpx

from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store import open_store
from tests.server.conftest import Server
from tests.server.launcher import run_openrecord

PASSWORD = "a long enough passphrase"
_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def rfc6238(secret_b32: str, at: float | None = None) -> str:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return str((struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000).zfill(6)


def hidden(page: str, action: str | None = None) -> dict[str, str]:
    """The hidden fields of the first form (posting to `action`, when given)."""
    forms = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    for target, body in forms:
        if action is None or target == action:
            return {k: html.unescape(v) for k, v in _HIDDEN.findall(body)}
    raise AssertionError(f"no form posting to {action} in:\n{page}")


def create_user(
    database: str, username: str, fhir_user: str, *, with_totp: bool = True
) -> str | None:
    """`openrecord admin create-user`; the TOTP key it printed (None without --totp)."""
    type, _, id = fhir_user.partition("/")
    option = {
        "Patient": "--patient",
        "Practitioner": "--practitioner",
        "RelatedPerson": "--related-person",
        "Person": "--person",
    }[type]
    done = run_openrecord(
        [
            "admin",
            "create-user",
            "--database",
            database,
            "--username",
            username,
            option,
            id,
            "--password-stdin",
            *(("--totp",) if with_totp else ()),
        ],
        input=PASSWORD + "\n",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"^TOTP key: ([A-Z2-7]+)$", done.stdout, re.M)
    return found[1] if found else None


def add_user(database: str, username: str, fhir_user: str, *, with_totp: bool = True) -> str:
    """A user made in-process (quicker than the CLI); their TOTP key ("" without)."""
    from openrecord.auth import totp
    from openrecord.auth.accounts import Accounts

    store = open_store(database)
    try:
        accounts = Accounts(store)
        user = accounts.create_user(username, PASSWORD, fhir_user)
        if not with_totp:
            return ""
        key = totp.new_secret()
        accounts.set_totp_secret(user.id, key)
        return key
    finally:
        store.close()


def seed(database: str, resources: list[dict[str, Any]]) -> None:
    store = open_store(database)
    try:
        records = RecordService(store)
        for r in resources:
            records.update(SecurityContext.open(), r["resourceType"], r["id"], r)
    finally:
        store.close()


def audit_events(database: str) -> list[dict[str, Any]]:
    """Every AuditEvent so far (read as the operator)."""
    import orjson

    store = open_store(database)
    try:
        records = RecordService(store)
        found = records.search(SecurityContext.open(), "AuditEvent", [("_count", "1000")])
        return [orjson.loads(r.data or b"{}") for r in found.resources]
    finally:
        store.close()


def audit_kinds(database: str) -> list[str]:
    """The authentication-event codes of every AuditEvent so far."""
    return [
        coding["code"]
        for event in audit_events(database)
        for coding in event.get("subtype", [])
        if coding.get("system") == "urn:openrecord:audit-auth-event"
    ]


def login(browser: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    page = browser.get("/auth/login")
    return browser.post(
        "/auth/login", data={**hidden(page.text), "username": username, "password": password}
    )


def pass_mfa(browser: httpx.Client, secret: str) -> httpx.Response:
    page = browser.get("/auth/mfa")
    assert page.status_code == 200, page.text
    fields = hidden(page.text, "/auth/mfa")
    return browser.post("/auth/mfa", data={**fields, "code": rfc6238(secret)})


@dataclass(frozen=True)
class Site:
    """A running authorizing server and the TOTP keys of the users it was seeded with."""

    server: Server
    keys: dict[str, str]  # username -> TOTP key

    @property
    def root(self) -> str:
        return self.server.base.rsplit("/fhir", 1)[0]

    def browser(self) -> httpx.Client:
        return httpx.Client(base_url=self.root, timeout=30, follow_redirects=False)
