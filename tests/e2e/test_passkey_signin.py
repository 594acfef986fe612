"""A SMART standalone launch signed in by a passkey alone, in headless Chromium.

Chromium's virtual authenticator (DevTools WebAuthn domain: CTAP2, resident keys,
user verification, the user verified) registers a passkey through /account/security
(the person signed in with password and TOTP code once), then the Python `fhirclient`
starts a standalone launch and the person only presses "Sign in with a passkey": the
login page's webauthn.js calls navigator.credentials.get with an empty
allowCredentials, the authenticator picks its discoverable credential, and the server
verifies the signature, the user handle and the UV flag — no password, no code —
then resumes the app's authorization (consent, code, token, record).

The pages are opened at http://localhost: an IP address cannot be a WebAuthn RP ID.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.auth.pages_helpers import PASSWORD, add_user, audit_events, rfc6238, seed
from tests.databases import backends
from tests.e2e.app_server import app_server
from tests.e2e.conftest import virtual_authenticator
from tests.server.conftest import Server, running_server

APP = Path(__file__).parent / "app"
SCOPE = "openid fhirUser launch/patient patient/Patient.rs patient/Observation.rs"
RECORD: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Grace"], "family": "Hopper"}]},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "subject": {"reference": "Patient/p1"},
     "valueQuantity": {"value": 58.0, "unit": "kg", "system": "http://unitsofmeasure.org",
                       "code": "kg"}},
]  # fmt: skip


@dataclass(frozen=True)
class Site:
    server: Server
    totp: str
    app: str

    @property
    def root(self) -> str:  # by name, as WebAuthn needs
        return self.server.base.rsplit("/fhir", 1)[0].replace("127.0.0.1", "localhost")


@pytest.fixture(scope="module", params=backends())
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[Site]:
    with (
        running_server(request.param, tmp_path_factory.mktemp("e2e-pk"), authorized=True) as server,
        app_server({"py-callback": APP / "callback.html"}) as app,
    ):
        seed(server.database, RECORD)
        yield Site(server, add_user(server.database, "grace", "Patient/p1"), app)


def _register_passkey(site: Site, page: Any) -> None:
    """Once, signed in the old way: password, TOTP code, then "Add a passkey"."""
    page.goto(f"{site.root}/auth/login?next=/account/security")
    page.fill("#username", "grace")
    page.fill("#password", PASSWORD)
    page.click("button:text-is('Sign in')")
    page.wait_for_url("**/auth/mfa")
    page.fill("#code", rfc6238(site.totp))
    page.click("button:has-text('Continue')")
    page.wait_for_url("**/account/security")
    page.fill("#passkey-name", "laptop")
    page.click("button:has-text('Add a passkey')")
    page.wait_for_selector("text=The passkey is registered.")
    page.click("button:has-text('Sign out')")
    page.wait_for_url("**/auth/login")


def test_standalone_launch_signed_in_by_a_passkey_alone(site: Site, chromium: Any) -> None:
    from fhirclient import client

    base = f"{site.root}/fhir"
    redirect = f"{site.app}/py-callback"
    registered = httpx.post(
        f"{site.root}/auth/register",
        json={
            "client_name": "e2e passkey app",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        },
    )
    assert registered.status_code == 201, registered.text
    smart = client.FHIRClient(
        settings={
            "app_id": registered.json()["client_id"],
            "api_base": base,
            "redirect_uri": redirect,
            "scope": SCOPE,
        }
    )
    context = chromium.new_context()
    try:
        page = context.new_page()
        cdp, authenticator = virtual_authenticator(context, page)
        _register_passkey(site, page)
        (credential,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
            "credentials"
        ]
        assert credential["isResidentCredential"] is True  # residentKey "required"
        assert credential["rpId"] == "localhost"

        page.goto(smart.authorize_url)
        page.wait_for_url("**/auth/login?request=*")
        page.click("button:has-text('Sign in with a passkey')")  # nothing typed
        page.wait_for_url("**/auth/consent")
        assert "e2e passkey app asks for access" in page.text_content("h1")
        assert "Grace Hopper" in page.text_content("main")
        page.click("button:has-text('Allow')")
        page.wait_for_url(f"{redirect}?*")
        smart.handle_callback(page.url)
        (used,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
            "credentials"
        ]
        assert used["signCount"] > credential["signCount"]
    finally:
        context.close()
    assert smart.ready and smart.patient_id == "p1"
    assert smart.patient.name[0].family == "Hopper"
    observation = smart.server.request_json("Observation/o1")
    assert observation["valueQuantity"]["value"] == 58.0
    assert urlsplit(smart.server.base_uri).hostname == "localhost"
    events = audit_events(site.server.database)
    passkey_logins = [e for e in events if e.get("outcomeDesc") == "passkey (user verified)"]
    assert len(passkey_logins) == 1
    # the only TOTP code and password of the test were those of the registration
    assert sum(e.get("outcomeDesc") == "password" for e in events) == 1
