"""The sign-in pages over HTTP on a real authorizing server (both backends): a whole
standalone launch through login, TOTP, patient picker and consent with scopes
unticked, and the attacks on them — CSRF on the consent form, MFA skipped by URL,
session fixation, password guessing (throttled, locked, audited), a patient the user
may not act for — plus the account pages, password reset and passkeys."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from openrecord.store import open_store
from tests.auth.oauth_helpers import REDIRECT, authorize, exchange, register, register_app
from tests.auth.pages_helpers import (
    PASSWORD,
    Site,
    add_user,
    audit_events,
    audit_kinds,
    create_user,
    hidden,
    login,
    pass_mfa,
    rfc6238,
    seed,
)
from tests.auth.soft_authenticator import SoftAuthenticator
from tests.databases import backends
from tests.server.conftest import running_server
from tests.server.launcher import run_openrecord

SCOPE = "openid fhirUser launch/patient patient/Patient.rs patient/Observation.rs offline_access"
COOKIE = "openrecord-session"  # plain HTTP on loopback: no Secure, no __Host- prefix

SEED = [
    {"resourceType": "Patient", "id": "mum", "name": [{"given": ["Mary"], "family": "Major"}]},
    {"resourceType": "Patient", "id": "kid", "name": [{"given": ["Kim"], "family": "Major"}]},
    {"resourceType": "Patient", "id": "stranger", "name": [{"family": "Stranger"}]},
    {"resourceType": "RelatedPerson", "id": "mum-of-kid", "patient": {"reference": "Patient/kid"}},
    {"resourceType": "Person", "id": "mary", "link": [
        {"target": {"reference": "Patient/mum"}},
        {"target": {"reference": "RelatedPerson/mum-of-kid"}},
    ]},
    {"resourceType": "Observation", "id": "kid-weight", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "subject": {"reference": "Patient/kid"}},
]  # fmt: skip


@pytest.fixture(scope="module", params=backends())
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("pages")
    with pytest.MonkeyPatch.context() as env:  # the server process inherits these
        env.setenv("OPENRECORD_LOGIN_DELAY_MS", "3000")  # long enough on a busy machine
        env.setenv("OPENRECORD_LOGIN_LOCKOUT_AFTER", "4")
        env.setenv("OPENRECORD_LOGIN_LOCKOUT_SECONDS", "60")
        with running_server(request.param, folder, authorized=True) as server:
            seed(server.database, SEED)
            key = create_user(server.database, "mary", "Patient/mum")  # the CLI
            assert key is not None
            keys = {"mary": key}
            for name in (
                "guess",
                "fixation",
                "bypass",
                "reset",
                "csrf",
                "picker",
                "apps",
                "passkey",
                "launcher",
                "forms",
            ):
                keys[name] = add_user(server.database, name, "Patient/mum")
            add_user(server.database, "newcomer", "Patient/kid", with_totp=False)
            yield Site(server, keys)


def _csrf(page: str) -> str:
    return hidden(page)["csrf"]


def _start(site: Site, browser: httpx.Client, scope: str = SCOPE) -> tuple[str, object]:
    app = register_app(site.server.base)
    auth = authorize(site.server.base, app["client_id"], scope)
    assert urlsplit(auth.location).path == "/auth/login", auth.location
    page = browser.get(auth.location)
    assert page.status_code == 200, page.text
    return app["client_id"], auth


def test_standalone_launch_with_a_patient_picked_and_a_scope_unticked(site: Site) -> None:
    with site.browser() as browser:
        client_id, auth = _start(site, browser)
        page = browser.get("/auth/login")  # same session, same form
        before = browser.cookies[COOKIE]
        done = browser.post(
            "/auth/login", data={**hidden(page.text), "username": "Mary", "password": PASSWORD}
        )
        assert done.status_code == 303 and done.headers["location"] == "/auth/mfa"
        assert browser.cookies[COOKIE] != before  # a new session id after the password
        done = pass_mfa(browser, site.keys["mary"])
        assert done.status_code == 303 and done.headers["location"] == "/auth/select-patient"
        picker = browser.get("/auth/select-patient")
        assert picker.status_code == 200
        assert "Mary Major" in picker.text and "Kim Major" in picker.text
        assert "Stranger" not in picker.text
        assert picker.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in picker.headers["content-security-policy"]
        done = browser.post("/auth/select-patient", data={**hidden(picker.text), "patient": "kid"})
        assert done.headers["location"] == "/auth/consent"
        consent = browser.get("/auth/consent")
        assert consent.status_code == 200
        assert "Kim Major" in consent.text
        # each scope in plain words, with a ticked box
        assert "Read and search observations" in consent.text
        for scope in SCOPE.split():
            assert 'name="scope" id="scope-' in consent.text
            assert f'value="{scope}" checked' in consent.text
        granted = [s for s in SCOPE.split() if s != "patient/Patient.rs"]  # unticked
        done = browser.post(
            "/auth/consent", data={**hidden(consent.text), "decision": "approve", "scope": granted}
        )
        assert done.status_code == 303
        target = done.headers["location"]
        assert target.startswith(REDIRECT + "?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        assert query["state"] == auth.state  # type: ignore[attr-defined]
    token = exchange(site.server.base, client_id, query["code"], auth.verifier)  # type: ignore[attr-defined]
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["patient"] == "kid"
    assert set(body["scope"].split()) == set(granted)
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    read = httpx.get(f"{site.server.base}/Observation/kid-weight", headers=headers)
    assert read.status_code == 200, read.text
    assert httpx.get(f"{site.server.base}/Patient/kid", headers=headers).status_code == 403
    kinds = audit_kinds(site.server.database)
    assert {"login", "mfa", "consent"} <= set(kinds)
    # the picker's look-ups are audited as the user, for patient administration
    lookups = [
        e
        for e in audit_events(site.server.database)
        for agent in e.get("agent", [])
        if agent.get("who", {}).get("reference") == "Patient/mum"
        and any(c["code"] == "PATADMIN" for p in agent.get("purposeOfUse", []) for c in p["coding"])
    ]
    assert lookups


def test_consent_without_the_csrf_token_is_refused_and_audited(site: Site) -> None:
    with site.browser() as browser:
        _start(site, browser)
        assert login(browser, "csrf").status_code == 303
        assert pass_mfa(browser, site.keys["csrf"]).status_code == 303
        browser.get("/auth/select-patient")
        browser.post(
            "/auth/select-patient",
            data={**hidden(browser.get("/auth/select-patient").text), "patient": "mum"},
        )
        consent = browser.get("/auth/consent")
        assert consent.status_code == 200
        fields = hidden(consent.text)
        forged = {"decision": "approve", "scope": SCOPE.split()}
        for attempt in ({}, {"csrf": "x" * len(fields["csrf"])}, {"csrf": ""}):
            refused = browser.post("/auth/consent", data={**forged, **attempt})
            assert refused.status_code == 403, refused.text
            assert "location" not in refused.headers
        # the right token from another site's page: the Origin gives it away
        refused = browser.post(
            "/auth/consent", data={**forged, **fields}, headers={"Origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        assert audit_kinds(site.server.database).count("consent-refused") >= 4
        # the request is still pending: the real form still works
        done = browser.post("/auth/consent", data={**fields, "decision": "deny"})
        assert done.status_code == 303
        assert parse_qs(urlsplit(done.headers["location"]).query)["error"] == ["access_denied"]


def test_mfa_cannot_be_skipped_by_url(site: Site) -> None:
    with site.browser() as browser:
        _start(site, browser)
        assert login(browser, "bypass").status_code == 303  # password only
        for path in ("/auth/select-patient", "/auth/consent", "/account/apps", "/account/security"):
            response = browser.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/auth/mfa"
        csrf = _csrf(browser.get("/auth/mfa").text)
        for path in ("/auth/select-patient", "/auth/consent", "/account/apps/revoke"):
            response = browser.post(
                path,
                data={"csrf": csrf, "decision": "approve", "patient": "mum", "scope": "openid"},
            )
            assert response.status_code == 303
            assert not response.headers["location"].startswith(REDIRECT)
        # a wrong code does not pass either
        wrong = browser.post(
            "/auth/mfa",
            data={
                "csrf": csrf,
                "method": "totp",
                "code": "000000" if rfc6238(site.keys["bypass"]) != "000000" else "111111",
            },
        )
        assert wrong.status_code == 401
        assert browser.get("/auth/consent").headers["location"] == "/auth/mfa"
        # "Not you? Sign out" on the MFA page ends the half-signed-in session
        logout = hidden(browser.get("/auth/mfa").text, "/auth/logout")
        assert browser.post("/auth/logout", data=logout).headers["location"] == "/auth/login"
        assert browser.get("/auth/mfa").headers["location"] == "/auth/login"
    with site.browser() as stranger:  # no session at all
        assert stranger.get("/auth/mfa").headers["location"] == "/auth/login"
        assert stranger.get("/auth/consent").headers["location"] == "/auth/login"


def test_a_session_id_planted_before_login_is_dead_after_it(site: Site) -> None:
    with site.browser() as attacker:
        page = attacker.get("/auth/login")
        planted = attacker.cookies[COOKIE]
    planted_cookie = {"Cookie": f"{COOKIE}={planted}"}
    with site.browser() as victim:  # the planted id is the victim's only cookie
        done = victim.post(
            "/auth/login",
            data={**hidden(page.text), "username": "fixation", "password": PASSWORD},
            headers=planted_cookie,
        )
        assert done.status_code == 303
        after_password = victim.cookies[COOKIE]
        assert after_password != planted
        assert pass_mfa(victim, site.keys["fixation"]).status_code == 303
        assert victim.cookies[COOKIE] not in (planted, after_password)
        assert victim.get("/account/apps").status_code == 200
    for stale in (planted, after_password):
        response = httpx.get(f"{site.root}/account/apps", headers={"Cookie": f"{COOKIE}={stale}"})
        assert response.status_code == 303
        assert response.headers["location"].startswith("/auth/login")


def test_session_cookie_attributes(site: Site) -> None:
    with site.browser() as browser:
        page = browser.get("/auth/login")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert page.headers["cache-control"] == "no-store"


def test_password_guessing_is_throttled_then_locked_and_audited(site: Site) -> None:
    with site.browser() as browser:
        for _ in range(2):  # free failures
            assert login(browser, "guess", "not the password").status_code == 401
        r = login(browser, "guess", "not the password")  # third: a 3-second wait starts
        assert r.status_code == 401
        r = login(browser, "guess", PASSWORD)  # at once: refused unchecked, even if right
        assert r.status_code == 429 and re.search(r"Wait \d+ seconds? before trying", r.text)
        time.sleep(3.1)
        r = login(browser, "guess", "not the password")  # fourth failure: locked
        assert r.status_code == 429 and "locked for 1 more minute" in r.text
        r = login(browser, "guess", PASSWORD)
        assert r.status_code == 429 and "locked" in r.text
        assert "location" not in r.headers
    kinds = audit_kinds(site.server.database)
    assert kinds.count("login-failed") >= 3
    assert "login-throttled" in kinds and "lockout" in kinds


def test_a_patient_the_user_may_not_act_for_is_refused(site: Site) -> None:
    with site.browser() as browser:
        _start(site, browser)
        assert login(browser, "picker").status_code == 303
        assert pass_mfa(browser, site.keys["picker"]).status_code == 303
        picker = browser.get("/auth/select-patient")
        refused = browser.post(
            "/auth/select-patient", data={**hidden(picker.text), "patient": "stranger"}
        )
        assert refused.status_code == 403
        assert browser.get("/auth/consent").headers["location"] == "/auth/select-patient"


def _sign_in(site: Site, browser: httpx.Client, username: str) -> None:
    assert login(browser, username).status_code == 303
    assert pass_mfa(browser, site.keys[username]).status_code == 303


def _launch(site: Site, browser: httpx.Client, client_id: str, patient: str) -> dict[str, str]:
    auth = authorize(site.server.base, client_id, SCOPE)
    browser.get(auth.location)  # signed in already: straight on
    picker = browser.get("/auth/select-patient")
    browser.post("/auth/select-patient", data={**hidden(picker.text), "patient": patient})
    consent = browser.get("/auth/consent")
    done = browser.post(
        "/auth/consent",
        data={**hidden(consent.text), "decision": "approve", "scope": SCOPE.split()},
    )
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    token = exchange(site.server.base, client_id, code, auth.verifier)
    assert token.status_code == 200, token.text
    return dict(token.json())


def test_connected_apps_are_listed_and_revoked(site: Site) -> None:
    with site.browser() as browser:
        _sign_in(site, browser, "apps")
        empty = browser.get("/account/apps")
        assert empty.status_code == 200 and "No app has access" in empty.text
        client_id = register(
            site.server.base,
            client_name="Growth chart",
            redirect_uris=[REDIRECT],
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        )["client_id"]
        token = _launch(site, browser, client_id, "kid")
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert (
            httpx.get(f"{site.server.base}/Observation/kid-weight", headers=headers).status_code
            == 200
        )
        apps = browser.get("/account/apps")
        assert "Growth chart" in apps.text and "Read and search observations" in apps.text
        form = hidden(apps.text, "/account/apps/revoke")
        assert form["client_id"] == client_id
        assert (
            browser.post("/account/apps/revoke", data={"client_id": client_id}).status_code == 403
        )
        done = browser.post("/account/apps/revoke", data=form)
        assert done.status_code == 303
        assert "Growth chart" not in browser.get("/account/apps").text
        after = httpx.get(f"{site.server.base}/Observation/kid-weight", headers=headers)
        assert after.status_code == 401
        refreshed = httpx.post(
            f"{site.root}/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token["refresh_token"],
                "client_id": client_id,
            },
        )
        assert refreshed.status_code == 400


def test_password_reset_by_one_time_link(site: Site) -> None:
    done = run_openrecord(
        [
            "admin",
            "reset-password",
            "--database",
            site.server.database,
            "--username",
            "reset",
        ],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith("/auth/reset?token=")
    with site.browser() as browser:
        page = browser.get(link)
        assert page.status_code == 200 and page.headers["referrer-policy"] == "same-origin"
        fields = hidden(page.text)
        mismatch = browser.post(
            "/auth/reset",
            data={**fields, "password": "new passphrase one", "confirm": "new passphrase two"},
        )
        assert mismatch.status_code == 400 and "not the same" in mismatch.text
        changed = browser.post(
            "/auth/reset",
            data={**fields, "password": "new passphrase one", "confirm": "new passphrase one"},
        )
        assert changed.status_code == 200 and "Password changed" in changed.text
        again = browser.post(
            "/auth/reset",
            data={
                **hidden(browser.get("/auth/login").text),
                "token": fields["token"],
                "password": "third passphrase x",
                "confirm": "third passphrase x",
            },
        )
        assert again.status_code == 400 and "expired or was used" in again.text
        assert browser.get(link).status_code == 400
        assert login(browser, "reset", PASSWORD).status_code == 401
        assert login(browser, "reset", "new passphrase one").status_code == 303


def test_passkey_enrolment_and_sign_in(site: Site) -> None:
    origin = site.root
    device = SoftAuthenticator("127.0.0.1", origin)
    with site.browser() as browser:
        _sign_in(site, browser, "passkey")
        page = browser.get("/account/security")
        options = json.loads(
            re.search(
                r'<script type="application/json" class="webauthn-options">(.*?)</script>',
                page.text,
                re.S,
            )[1]
        )  # type: ignore[index]
        assert options["rp"]["id"] == "127.0.0.1"
        fields = hidden(page.text, "/account/security/passkey")
        done = browser.post(
            "/account/security/passkey",
            data={**fields, "name": "test key", "credential": json.dumps(device.create(options))},
        )
        assert done.status_code == 200 and "The passkey is registered" in done.text
        # the challenge was single use: posting the same registration again fails
        replay = browser.post(
            "/account/security/passkey",
            data={
                **hidden(done.text, "/account/security/passkey"),
                "name": "x",
                "credential": json.dumps(device.create(options)),
            },
        )
        assert replay.status_code == 400
    with site.browser() as browser:
        assert login(browser, "passkey").status_code == 303
        page = browser.get("/auth/mfa")
        assert "Use a passkey" in page.text
        options = json.loads(
            re.search(
                r'<script type="application/json" class="webauthn-options">(.*?)</script>',
                page.text,
                re.S,
            )[1]
        )  # type: ignore[index]
        fields = hidden(page.text, "/auth/mfa")
        phished = browser.post(
            "/auth/mfa",
            data={
                **fields,
                "credential": json.dumps(device.get(options, origin="http://evil.test")),
            },
        )
        assert phished.status_code == 401
        page = browser.get("/auth/mfa")  # a fresh challenge
        options = json.loads(
            re.search(
                r'<script type="application/json" class="webauthn-options">(.*?)</script>',
                page.text,
                re.S,
            )[1]
        )  # type: ignore[index]
        done = browser.post(
            "/auth/mfa",
            data={
                **hidden(page.text, "/auth/mfa"),
                "method": "passkey",
                "credential": json.dumps(device.get(options)),
            },
        )
        assert done.status_code == 303 and done.headers["location"] == "/account/apps"
        assert browser.get("/account/apps").status_code == 200


def test_first_sign_in_sets_up_the_authenticator_app(site: Site) -> None:
    with site.browser() as browser:
        assert login(browser, "newcomer").status_code == 303
        page = browser.get("/auth/mfa")
        secret = re.search(r'<code class="secret" id="totp-secret">([A-Z2-7]+)</code>', page.text)
        assert secret is not None
        fields = hidden(page.text, "/auth/mfa")
        assert fields["method"] == "enrol"
        # the secret being set up is in the server-side session, but never in plain text
        store = open_store(site.server.database)
        try:
            kept = " ".join(str(r[0]) for r in store.query("SELECT data FROM account_session"))
        finally:
            store.close()
        assert "totp_pending" in kept and secret[1] not in kept
        wrong = browser.post("/auth/mfa", data={**fields, "code": "12345x"})
        assert wrong.status_code == 401
        fields = hidden(browser.get("/auth/mfa").text, "/auth/mfa")
        done = browser.post("/auth/mfa", data={**fields, "code": rfc6238(secret[1])})
        assert done.status_code == 303 and done.headers["location"] == "/account/apps"
    with site.browser() as browser:  # from now on the code is asked, not offered again
        assert login(browser, "newcomer").status_code == 303
        page = browser.get("/auth/mfa")
        assert "totp-secret" not in page.text and hidden(page.text, "/auth/mfa")["method"] == "totp"


def test_an_unknown_or_finished_request_is_explained(site: Site) -> None:
    with site.browser() as browser:
        page = browser.get("/auth/login?request=nonsense")
        assert page.status_code == 400 and "start again" in page.text
        assert browser.get("/auth/static/auth.css").status_code == 200
        assert browser.get("/auth/static/../pages.py").status_code == 404
        assert browser.get("/auth/static/pages.py").status_code == 404


def test_create_user_refuses_what_is_not_there(site: Site) -> None:
    done = run_openrecord(
        [
            "admin",
            "create-user",
            "--database",
            site.server.database,
            "--username",
            "nobody",
            "--patient",
            "missing",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        timeout=60,
    )
    assert done.returncode == 2 and "Patient/missing is not in the database" in done.stderr


def _ehr_launch(database: str, patient: str) -> str:
    from openrecord.auth.authorization import create_launch
    from openrecord.store import open_store

    store = open_store(database)
    try:
        return create_launch(store, patient=patient)
    finally:
        store.close()


def test_an_ehr_launch_is_limited_to_patients_the_user_may_act_for(site: Site) -> None:
    client_id = register_app(site.server.base)["client_id"]
    scope = "launch openid fhirUser patient/Observation.rs"
    with site.browser() as browser:
        _sign_in(site, browser, "launcher")
        foreign = authorize(
            site.server.base, client_id, scope, launch=_ehr_launch(site.server.database, "stranger")
        )
        browser.get(foreign.location)
        refused = browser.get("/auth/select-patient")
        assert refused.status_code == 403 and "cannot act for" in refused.text
        assert browser.get("/auth/consent").headers["location"] == "/auth/select-patient"
        own = authorize(
            site.server.base, client_id, scope, launch=_ehr_launch(site.server.database, "kid")
        )
        assert browser.get(own.location).headers["location"] == "/auth/select-patient"
        assert browser.get("/auth/select-patient").headers["location"] == "/auth/consent"
        consent = browser.get("/auth/consent")
        assert consent.status_code == 200 and "Kim Major" in consent.text
        done = browser.post(
            "/auth/consent",
            data={**hidden(consent.text), "decision": "approve", "scope": scope.split()},
        )
        code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    token = exchange(site.server.base, client_id, code, own.verifier)
    assert token.status_code == 200, token.text
    assert token.json()["patient"] == "kid"
    assert "select-patient-refused" in audit_kinds(site.server.database)


def test_every_form_refuses_a_post_without_its_csrf_token(site: Site) -> None:
    with site.browser() as browser:
        browser.get("/auth/login")  # an anonymous session exists
        refused = browser.post("/auth/login", data={"username": "csrf", "password": PASSWORD})
        assert refused.status_code == 403
        refused = browser.post(
            "/auth/reset", data={"token": "x", "password": "p" * 12, "confirm": "p" * 12}
        )
        assert refused.status_code == 403
    with site.browser() as browser:
        _sign_in(site, browser, "forms")
        for path, data in (
            ("/auth/select-patient", {"patient": "mum"}),
            ("/auth/consent", {"decision": "approve"}),
            ("/account/apps/revoke", {"client_id": "x"}),
            ("/account/security/totp", {"code": "123456"}),
            ("/account/security/passkey", {"credential": "{}"}),
            ("/account/security/passkey/remove", {"credential_id": "x"}),
            ("/auth/logout", {}),
        ):
            for token in ({}, {"csrf": "forged"}):
                response = browser.post(path, data={**data, **token})
                assert response.status_code == 403, (path, response.text)
        assert browser.get("/account/apps").status_code == 200  # still signed in
