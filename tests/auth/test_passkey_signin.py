"""Sign-in with a passkey alone (auth/passkey_signin.py), over HTTP against the real
server, with a software authenticator that keeps a discoverable credential: it returns
the user handle it was given at registration and sets the UV flag (WebAuthn L2 §6.1,
bit 2) only when told the user was verified. What must sign in (and resume the app's
authorization), and each thing that must not — every refusal audited."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from openrecord.store import open_store
from tests.auth.oauth_helpers import REDIRECT, authorize, exchange, register_app
from tests.auth.pages_helpers import (
    PASSWORD,
    Site,
    add_user,
    audit_events,
    hidden,
    login,
    pass_mfa,
    seed,
)
from tests.auth.soft_authenticator import AT, UP, UV, SoftAuthenticator, b64
from tests.databases import backends
from tests.server.conftest import running_server

SCOPE = "openid fhirUser launch/patient patient/Patient.rs patient/Observation.rs"
COOKIE = "openrecord-session"  # plain HTTP on loopback
USERS = ("launch", "handle", "nouv", "replay", "counter", "expiry", "locked", "regist")
SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Ada"], "family": "Lovelace"}]},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "subject": {"reference": "Patient/p1"}},
]  # fmt: skip


class DiscoverableAuthenticator(SoftAuthenticator):
    """The software authenticator with a resident credential: it remembers the user
    handle (`user.id`) of the registration and returns it in its assertions."""

    user_handle: str | None = None

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        self.user_handle = options["user"]["id"]
        return super().create(options, origin=origin)

    def create_without_uv(self, options: dict[str, Any]) -> dict[str, Any]:
        """A registration by an authenticator that did not verify the user (UP and AT
        flags only): the server must refuse it now."""
        credential = super().create(options)
        attestation = credential["response"]["attestationObject"]
        raw = cbor2.loads(base64.urlsafe_b64decode(attestation + "=" * (-len(attestation) % 4)))
        data = bytearray(raw["authData"])
        data[32] = UP | AT
        raw["authData"] = bytes(data)
        credential["response"]["attestationObject"] = b64(cbor2.dumps(raw))
        return credential

    def assertion(
        self,
        options: dict[str, Any],
        *,
        verified: bool = True,
        handle: str | None = "mine",
        count: int | None = None,
    ) -> str:
        """The JSON a browser posts for `navigator.credentials.get(options)`."""
        self.count = self.count + 1 if count is None else count
        client_data = self._client_data("webauthn.get", options["challenge"], None)
        auth_data = (
            hashlib.sha256(options["rpId"].encode()).digest()
            + bytes([UP | (UV if verified else 0)])
            + struct.pack(">I", self.count)
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response: dict[str, str | None] = {
            "clientDataJSON": b64(client_data),
            "authenticatorData": b64(auth_data),
            "signature": b64(signature),
        }
        if handle is not None:
            response["userHandle"] = self.user_handle if handle == "mine" else handle
        return json.dumps(
            {
                "id": b64(self.credential_id),
                "rawId": b64(self.credential_id),
                "type": "public-key",
                "response": response,
                "clientExtensionResults": {},
            }
        )


@pytest.fixture(scope="module", params=backends())
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("passkey-signin")
    with pytest.MonkeyPatch.context() as env:  # the server process inherits these
        env.setenv("OPENRECORD_LOGIN_DELAY_MS", "60000")  # no test waits for a delay
        env.setenv("OPENRECORD_LOGIN_LOCKOUT_AFTER", "3")
        env.setenv("OPENRECORD_LOGIN_LOCKOUT_SECONDS", "600")
        with running_server(request.param, folder, authorized=True) as server:
            seed(server.database, SEED)
            keys = {name: add_user(server.database, name, "Patient/p1") for name in USERS}
            yield Site(server, keys)


def _options(page: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/json" class="webauthn-options">(.*?)</script>', page, re.S
    )
    assert found is not None, page
    return dict(json.loads(found[1]))


def _enrol(site: Site, username: str) -> DiscoverableAuthenticator:
    """Register a passkey the way a person does: signed in (password and TOTP code),
    on the security page."""
    device = DiscoverableAuthenticator("127.0.0.1", site.root)
    with site.browser() as browser:
        assert login(browser, username).status_code == 303
        assert pass_mfa(browser, site.keys[username]).status_code == 303
        page = browser.get("/account/security")
        done = browser.post(
            "/account/security/passkey",
            data={
                **hidden(page.text, "/account/security/passkey"),
                "name": "phone",
                "credential": json.dumps(device.create(_options(page.text))),
            },
        )
        assert done.status_code == 200 and "The passkey is registered" in done.text, done.text
    return device


def _passkey_post(browser: httpx.Client, page: httpx.Response, credential: str) -> httpx.Response:
    fields = hidden(page.text, "/auth/login/passkey")
    return browser.post("/auth/login/passkey", data={**fields, "credential": credential})


def _refusals(site: Site) -> list[tuple[str, str, str | None]]:
    """(kind, description, user) of every passkey sign-in event that was not a success."""
    found = []
    for event in audit_events(site.server.database):
        desc = event.get("outcomeDesc", "")
        kinds = [
            c["code"]
            for c in event.get("subtype", [])
            if c.get("system") == "urn:openrecord:audit-auth-event"
        ]
        if desc.startswith("passkey:") and kinds:
            who = [
                a["who"]["reference"]
                for a in event.get("agent", [])
                if "reference" in a.get("who", {})
            ]
            found.append((kinds[0], desc, who[0] if who else None))
    return found


def test_the_registration_asks_for_a_discoverable_user_verifying_passkey(site: Site) -> None:
    device = DiscoverableAuthenticator("127.0.0.1", site.root)
    with site.browser() as browser:
        assert login(browser, "regist").status_code == 303
        assert pass_mfa(browser, site.keys["regist"]).status_code == 303
        page = browser.get("/account/security")
        options = _options(page.text)
        selection = options["authenticatorSelection"]
        assert selection["residentKey"] == "required"
        assert selection["requireResidentKey"] is True  # Level 1 clients read this one
        assert selection["userVerification"] == "required"
        refused = browser.post(
            "/account/security/passkey",
            data={
                **hidden(page.text, "/account/security/passkey"),
                "name": "old key",
                "credential": json.dumps(device.create_without_uv(options)),
            },
        )
        assert refused.status_code == 400 and "User verification is required" in refused.text
        assert "No passkey yet" in refused.text


def test_a_passkey_alone_completes_a_standalone_launch(site: Site) -> None:
    device = _enrol(site, "launch")
    app = register_app(site.server.base)
    auth = authorize(site.server.base, app["client_id"], SCOPE)
    with site.browser() as browser:
        page = browser.get(auth.location)  # /auth/login?request=…
        assert page.status_code == 200 and "Sign in with a passkey" in page.text
        options = _options(page.text)
        assert options["allowCredentials"] == [] and options["userVerification"] == "required"
        assert options["rpId"] == "127.0.0.1"
        before = browser.cookies[COOKIE]
        done = _passkey_post(browser, page, device.assertion(options))
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/auth/select-patient"  # no password, no TOTP
        assert browser.cookies[COOKIE] != before  # a new session id once signed in
        assert browser.get("/auth/mfa").headers["location"] == "/auth/select-patient"
        assert browser.get("/auth/select-patient").headers["location"] == "/auth/consent"
        consent = browser.get("/auth/consent")
        assert consent.status_code == 200 and "Ada Lovelace" in consent.text
        done = browser.post(
            "/auth/consent",
            data={**hidden(consent.text), "decision": "approve", "scope": SCOPE.split()},
        )
    target = done.headers["location"]
    assert target.startswith(REDIRECT + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert query["state"] == auth.state
    token = exchange(site.server.base, app["client_id"], query["code"], auth.verifier)
    assert token.status_code == 200, token.text
    assert token.json()["patient"] == "p1"
    read = httpx.get(
        f"{site.server.base}/Observation/o1",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert read.status_code == 200, read.text
    signed_in = [
        e
        for e in audit_events(site.server.database)
        if e.get("outcomeDesc") == "passkey (user verified)"
    ]
    assert len(signed_in) == 1 and signed_in[0]["outcome"] == "0"
    assert any(c.get("code") == "110122" for c in signed_in[0]["subtype"])  # DICOM Login


def test_an_unknown_credential_or_a_wrong_user_handle_is_refused(site: Site) -> None:
    device = _enrol(site, "handle")
    stranger = DiscoverableAuthenticator("127.0.0.1", site.root)
    stranger.user_handle = device.user_handle  # claims the user, holds another key
    with site.browser() as browser:
        page = browser.get("/auth/login")
        refused = _passkey_post(browser, page, stranger.assertion(_options(page.text)))
        assert refused.status_code == 401 and "not registered here" in refused.text
        page = refused  # the refusal is the login page again, with a fresh challenge
        other = b64(b"00000000-0000-0000-0000-000000000000")
        refused = _passkey_post(browser, page, device.assertion(_options(page.text), handle=other))
        assert refused.status_code == 401 and "user handle" in refused.text
        refused = _passkey_post(
            browser, refused, device.assertion(_options(refused.text), handle=None)
        )
        assert refused.status_code == 401 and "no user handle" in refused.text
        assert COOKIE in browser.cookies and browser.get("/account/apps").status_code == 303
    refusals = _refusals(site)
    assert ("login-failed", "passkey: this passkey is not registered here", None) in refusals
    handle_user = [r for r in refusals if "user handle" in r[1]]
    assert len(handle_user) == 2 and all(r[0] == "login-failed" for r in handle_user)
    assert all(r[2] == "Patient/p1" for r in handle_user)  # the passkey's owner


def test_a_passkey_that_did_not_verify_the_user_signs_in_only_as_a_second_factor(
    site: Site,
) -> None:
    device = _enrol(site, "nouv")
    with site.browser() as browser:
        page = browser.get("/auth/login")
        refused = _passkey_post(
            browser, page, device.assertion(_options(page.text), verified=False)
        )
        assert refused.status_code == 401 and "User verification is required" in refused.text
        # after the password, the same assertion (UV not set) is a fine second factor
        assert login(browser, "nouv").status_code == 303
        mfa = browser.get("/auth/mfa")
        done = browser.post(
            "/auth/mfa",
            data={
                **hidden(mfa.text, "/auth/mfa"),
                "method": "passkey",
                "credential": device.assertion(_options(mfa.text), verified=False),
            },
        )
        assert done.status_code == 303 and done.headers["location"] == "/account/apps"
    assert any("User verification is required" in r[1] for r in _refusals(site))


def test_a_replayed_assertion_or_a_used_challenge_is_refused(site: Site) -> None:
    device = _enrol(site, "replay")
    with site.browser() as browser:
        page = browser.get("/auth/login")
        used = device.assertion(_options(page.text))
        assert _passkey_post(browser, page, used).status_code == 303
    with site.browser() as thief:  # the same assertion in another session
        page = thief.get("/auth/login")
        refused = _passkey_post(thief, page, used)
        assert refused.status_code == 401 and "challenge" in refused.text
    with site.browser() as browser:  # a challenge is spent by the first attempt
        page = browser.get("/auth/login")
        options = _options(page.text)
        first = _passkey_post(browser, page, "{}")  # names no credential: not counted
        assert first.status_code == 401 and "was not used" in first.text
        again = browser.post(
            "/auth/login/passkey",
            data={
                **hidden(first.text, "/auth/login/passkey"),
                "credential": device.assertion(options),
            },
        )
        # the refusal replaced the spent challenge with a fresh one: the old is no more
        assert again.status_code == 401 and "expected challenge" in again.text
    reasons = [r[1] for r in _refusals(site)]
    assert sum("expected challenge" in r for r in reasons) == 2


def test_a_challenge_expires(site: Site) -> None:
    device = _enrol(site, "expiry")
    with site.browser() as browser:
        page = browser.get("/auth/login")
        cookie = browser.cookies[COOKIE]
        store = open_store(site.server.database)  # five minutes pass
        try:
            digest = hashlib.sha256(cookie.encode()).hexdigest()
            ((data,),) = store.query(
                "SELECT data FROM account_session WHERE id_hash = ?", (digest,)
            )
            stored = json.loads(data)
            stored["passkey_signin"]["expires"] -= 301
            with store.write() as tx:
                tx.execute(
                    "UPDATE account_session SET data = ? WHERE id_hash = ?",
                    (json.dumps(stored), digest),
                )
        finally:
            store.close()
        refused = _passkey_post(browser, page, device.assertion(_options(page.text)))
        assert refused.status_code == 401 and "expired or was used" in refused.text
        assert "passkey: the sign-in request expired or was used" in [r[1] for r in _refusals(site)]
        done = _passkey_post(browser, refused, device.assertion(_options(refused.text)))
        assert done.status_code == 303  # the page it showed has a fresh one


def test_a_signature_counter_that_went_back_is_refused(site: Site) -> None:
    device = _enrol(site, "counter")
    with site.browser() as browser:
        page = browser.get("/auth/login")
        done = _passkey_post(browser, page, device.assertion(_options(page.text), count=50))
        assert done.status_code == 303
    with site.browser() as browser:  # a clone of the authenticator, behind the original
        page = browser.get("/auth/login")
        refused = _passkey_post(browser, page, device.assertion(_options(page.text), count=7))
        assert refused.status_code == 401 and "sign count of 7" in refused.text
    assert any("sign count of 7" in r[1] and r[0] == "login-failed" for r in _refusals(site))


def test_failed_passkey_attempts_lock_the_passkey_but_not_the_password(site: Site) -> None:
    device = _enrol(site, "locked")
    with site.browser() as browser:
        page = browser.get("/auth/login")
        statuses = []
        for _ in range(3):  # LOCKOUT_AFTER=3
            page = _passkey_post(
                browser, page, device.assertion(_options(page.text), verified=False)
            )
            statuses.append(page.status_code)
        assert statuses == [401, 401, 429] and "locked" in page.text
        refused = _passkey_post(browser, page, device.assertion(_options(page.text)))
        assert refused.status_code == 429 and "locked" in refused.text  # even a good one
        assert "location" not in refused.headers
        assert login(browser, "locked", PASSWORD).status_code == 303  # its own key
    lockouts = [r for r in _refusals(site) if r[0] == "lockout"]
    assert len(lockouts) == 2 and all(r[2] == "Patient/p1" for r in lockouts)


def test_the_passkey_form_needs_its_csrf_token(site: Site) -> None:
    with site.browser() as browser:
        page = browser.get("/auth/login")
        fields = hidden(page.text, "/auth/login/passkey")
        for token in ({}, {"csrf": "forged"}):
            response = browser.post("/auth/login/passkey", data={"credential": "{}", **token})
            assert response.status_code == 403
        response = browser.post(
            "/auth/login/passkey",
            data={**fields, "credential": "{}"},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403
