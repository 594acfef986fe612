"""Browser end-to-end tests in headless Chromium, on one server per backend.

Standalone launches by the real SMART client libraries,
through the real login, MFA (a TOTP code computed here from RFC 6238) and consent
pages of an authorizing server, on each backend:

- the Python `fhirclient` (PyPI) builds the authorize URL (discovery, PKCE S256),
  the browser signs in, and the library exchanges the code and reads the record;
- the JavaScript `fhirclient` (npm, its browser build) runs in a small app page that
  launches, gets its code back, exchanges it and reads the record — all in the page.

The app pages are served by the test's small web server on an origin of their own:
the app reaches discovery, the token endpoint and the FHIR API through CORS.

Passkeys: Chromium's virtual authenticator (DevTools WebAuthn domain, CTAP2, user
verification) registers a passkey through /account/security and signs in with it at
the MFA step — the page's own webauthn.js calling navigator.credentials.create/get,
the server verifying real ES256 signatures. Those pages are opened at
http://localhost: an IP address cannot be a WebAuthn RP ID.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.auth.pages_helpers import PASSWORD, add_user, create_user, rfc6238, seed
from tests.databases import backends
from tests.e2e.app_server import app_server
from tests.e2e.conftest import virtual_authenticator
from tests.server.conftest import Server, running_server

APP = Path(__file__).parent / "app"
SCOPE = "openid fhirUser launch/patient patient/Patient.rs patient/Observation.rs offline_access"
RECORD = [
    {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Ada"], "family": "Lovelace"}],
     "birthDate": "1815-12-10"},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Other"}]},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "subject": {"reference": "Patient/p1"},
     "valueQuantity": {"value": 61.5, "unit": "kg", "system": "http://unitsofmeasure.org",
                       "code": "kg"}},
    {"resourceType": "Observation", "id": "o2", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "subject": {"reference": "Patient/p2"}},
]  # fmt: skip


@dataclass(frozen=True)
class Site:
    server: Server
    keys: dict[str, str]
    app: str  # the app pages' origin (the test's static server)

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def root(self) -> str:
        return self.server.base.rsplit("/fhir", 1)[0]


@pytest.fixture(scope="module", params=backends())
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium: Any,
    js_client: Path,
) -> Iterator[Site]:
    files = {"launch.html": APP / "launch.html", "index.html": APP / "index.html",
             "py-callback": APP / "callback.html", "fhir-client.js": js_client}  # fmt: skip
    with (
        running_server(request.param, tmp_path_factory.mktemp("e2e"), authorized=True) as server,
        app_server(files) as app,
    ):
        seed(server.database, RECORD)
        keys = {"py": create_user(server.database, "ada-py", "Patient/p1") or ""}
        keys["js"] = add_user(server.database, "ada-js", "Patient/p1")
        keys["passkey"] = add_user(server.database, "grace", "Patient/p1")
        yield Site(server, keys, app)


def _register(site: Site, redirect: str) -> str:
    response = httpx.post(
        f"{site.root}/auth/register",
        json={
            "client_name": "e2e app",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


def _sign_in_and_consent(page: Any, username: str, key: str, untick: tuple[str, ...] = ()) -> None:
    """What the person does in the browser: password, TOTP code, then consent."""
    page.wait_for_url("**/auth/login?request=*")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()
    assert urlsplit(page.url).path == "/auth/mfa", page.content()
    page.wait_for_url("**/auth/mfa")
    page.fill("#code", rfc6238(key))
    page.click("button:has-text('Continue')")
    page.wait_for_url("**/auth/consent")
    assert "e2e app asks for access" in page.text_content("h1")
    assert "Ada Lovelace" in page.text_content("main")
    for scope in untick:
        page.uncheck(f"input[name=scope][value='{scope}']")
    page.click("button:has-text('Allow')")


def test_python_fhirclient_standalone_launch(site: Site, chromium: Any) -> None:
    from fhirclient import client
    from fhirclient.models.observation import Observation

    redirect = f"{site.app}/py-callback"  # the test reads the URL it lands on
    smart = client.FHIRClient(
        settings={
            "app_id": _register(site, redirect),
            "api_base": site.base,
            "redirect_uri": redirect,
            "scope": SCOPE,
        }
    )
    authorize_url = smart.authorize_url
    assert urlsplit(authorize_url).path == "/auth/authorize"
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(authorize_url)
        _sign_in_and_consent(page, "ada-py", site.keys["py"])
        page.wait_for_url(f"{redirect}?*")
        smart.handle_callback(page.url)
    finally:
        context.close()
    assert smart.ready and smart.patient_id == "p1"
    assert smart.patient.name[0].family == "Lovelace"
    search = list(Observation.where(struct={"patient": "p1"}).perform_resources_iter(smart.server))
    assert [o.id for o in search] == ["o1"]
    assert search[0].valueQuantity.value == 61.5
    with pytest.raises(Exception, match=r"404|403"):  # another patient's record
        smart.server.request_json("Observation/o2")


def test_javascript_fhirclient_standalone_launch(
    site: Site, chromium: Any, js_client: Path
) -> None:
    client_id = _register(site, f"{site.app}/index.html")
    config = {"clientId": client_id, "iss": site.base, "scope": SCOPE}
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.app}/launch.html#{quote(json.dumps(config))}")
        _sign_in_and_consent(page, "ada-js", site.keys["js"], untick=("offline_access",))
        # the client may already have exchanged the code and dropped it from the URL
        page.wait_for_url(f"{site.app}/index.html**")
        page.wait_for_selector("#result:not(:empty)")
        result = json.loads(page.text_content("#result"))
    finally:
        context.close()
    assert "error" not in result, result
    assert result["patientId"] == "p1"
    assert result["patient"]["name"][0]["family"] == "Lovelace"
    assert [o["id"] for o in result["observations"]] == ["o1"]
    assert "offline_access" not in result["scope"].split()  # unticked on the consent page
    assert "patient/Observation.rs" in result["scope"].split()


def test_register_a_passkey_then_sign_in_with_it(site: Site, chromium: Any) -> None:
    root, key = site.root.replace("127.0.0.1", "localhost"), site.keys["passkey"]
    context = chromium.new_context()
    try:
        page = context.new_page()
        cdp, authenticator = virtual_authenticator(context, page)
        page.goto(f"{root}/auth/login?next=/account/security")
        page.fill("#username", "grace")
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url("**/auth/mfa")
        page.fill("#code", rfc6238(key))
        page.click("button:has-text('Continue')")
        page.wait_for_url("**/account/security")
        assert "No passkey yet" in page.text_content("main")

        page.fill("#passkey-name", "virtual key")
        page.click("button:has-text('Add a passkey')")
        page.wait_for_selector("text=The passkey is registered.")
        assert "virtual key" in page.text_content("main")
        (credential,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
            "credentials"
        ]
        assert credential["rpId"] == "localhost"

        page.click("button:has-text('Sign out')")
        page.wait_for_url("**/auth/login")
        page.fill("#username", "grace")
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url("**/auth/mfa")
        page.click("button:has-text('Use a passkey')")
        page.wait_for_url("**/account/apps")
        assert "Connected apps" in page.text_content("h1")
        (used,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
            "credentials"
        ]
        assert used["signCount"] > credential["signCount"]
    finally:
        context.close()
