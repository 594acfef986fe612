"""SMART Backend Services: clients registered by RFC 7591 (with a trusted software
statement) or by the operator get `system/` tokens with RS384/ES384 assertions (the
SMART IG's example keys) and read; nobody grants themselves `system/` scopes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.auth.conftest import SOFTWARE_ISSUER, AuthServer, add_client
from tests.auth.oauth_helpers import backend_token, bearer, example_key

ALGS = ["ES384", "RS384"]


def _statement(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": SOFTWARE_ISSUER, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body | claims, key, algorithms=["RS256"])


def _backend_metadata(alg: str, scope: str) -> dict[str, Any]:
    public, _ = example_key(alg)
    return {
        "client_name": f"{alg} backend",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": scope,
        "jwks": public,
    }


def _register(auth_server: AuthServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{auth_server.root}/auth/register", json=body)


def _reads_as_system(auth_server: AuthServer, token: str) -> None:
    headers = bearer(token)
    for path in ("Patient/pa", "Patient/pb", "Observation/ob"):
        assert httpx.get(f"{auth_server.base}/{path}", headers=headers).status_code == 200
    search = httpx.get(f"{auth_server.base}/Observation", headers=headers).json()
    ids = {e["resource"]["id"] for e in search["entry"]}
    assert {"oa", "ob", "ob2"} <= ids
    write = httpx.post(
        f"{auth_server.base}/Patient",
        json={"resourceType": "Patient", "name": [{"family": "X"}]},
        headers=headers,
    )
    assert write.status_code == 403  # .rs grants no create


@pytest.mark.parametrize("alg", ALGS)
def test_rfc7591_client_with_trusted_statement_gets_system_token(
    auth_server: AuthServer, alg: str
) -> None:
    statement = _statement(auth_server.issuer_key, **_backend_metadata(alg, "system/*.rs"))
    registered = _register(auth_server, {"software_statement": statement})
    assert registered.status_code == 201, registered.text
    client = registered.json()
    assert client["scope"] == "system/*.rs" and "client_secret" not in client
    _, key = example_key(alg)
    response = backend_token(auth_server.base, client["client_id"], key, alg, "system/*.rs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.rs"
    assert 0 < body["expires_in"] <= 3600 and "refresh_token" not in body
    assert response.headers["cache-control"] == "no-store"
    _reads_as_system(auth_server, body["access_token"])
    # more than registered is refused
    wider = backend_token(auth_server.base, client["client_id"], key, alg, "system/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("alg", ALGS)
def test_operator_registered_client_gets_system_token(auth_server: AuthServer, alg: str) -> None:
    public, key = example_key(alg)
    client = add_client(
        auth_server.database,
        auth_server.folder,
        public,
        "--name",
        f"{alg} job",
        "--grant-type",
        "client_credentials",
        "--scope",
        "system/*.rs",
    )
    response = backend_token(auth_server.base, client, key, alg, "system/Patient.rs")
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert httpx.get(f"{auth_server.base}/Patient/pb", headers=bearer(token)).status_code == 200
    observation = httpx.get(f"{auth_server.base}/Observation/ob", headers=bearer(token))
    assert observation.status_code == 403  # narrowed to Patient


def test_system_scopes_are_never_self_granted(auth_server: AuthServer) -> None:
    response = _register(auth_server, _backend_metadata("ES384", "system/*.rs"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    app = _register(
        auth_server,
        {
            "client_name": "sneaky",
            "redirect_uris": ["https://app.example/cb"],
            "scope": "patient/*.rs system/*.cruds",
            "token_endpoint_auth_method": "none",
        },
    )
    assert app.status_code == 400


def test_statement_from_an_untrusted_issuer_is_refused(auth_server: AuthServer) -> None:
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    forged = _statement(stranger, **_backend_metadata("ES384", "system/*.rs"))
    response = _register(auth_server, {"software_statement": forged})
    assert response.status_code == 400
    assert response.json()["error"] in (
        "invalid_software_statement",
        "unapproved_software_statement",
    )
    expired = _statement(
        auth_server.issuer_key,
        exp=int(time.time()) - 10,
        **_backend_metadata("ES384", "system/*.rs"),
    )
    assert _register(auth_server, {"software_statement": expired}).status_code == 400


def test_private_keys_are_not_accepted_as_client_keys(auth_server: AuthServer) -> None:
    metadata = _backend_metadata("ES384", "system/*.rs")
    from tests.shared_data import require_shared

    folder = require_shared("smart", "smart-app-launch-2.2.0", "example-keys")
    metadata["jwks"] = json.loads((folder / "ES384.private.json").read_text())
    statement = _statement(auth_server.issuer_key, **metadata)
    response = _register(auth_server, {"software_statement": statement})
    assert response.status_code == 400


@pytest.fixture()
def jwks_host() -> Iterator[tuple[str, dict[str, Any]]]:
    """A client's JWK Set published over HTTP (its jwks_uri)."""
    public, _ = example_key("RS384")
    body = json.dumps(public).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json", public
    finally:
        server.shutdown()


def test_jwks_uri_client(auth_server: AuthServer, jwks_host: tuple[str, Any]) -> None:
    uri, _ = jwks_host
    from tests.auth.conftest import admin_cli

    done = admin_cli(
        auth_server.database,
        "add-client",
        "--name",
        "jwks_uri job",
        "--grant-type",
        "client_credentials",
        "--jwks-uri",
        uri,
        "--scope",
        "system/Observation.rs",
    )
    assert done.returncode == 0, done.stderr
    client = json.loads(done.stdout)["client_id"]
    _, key = example_key("RS384")
    response = backend_token(auth_server.base, client, key, "RS384", "system/Observation.rs")
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert httpx.get(f"{auth_server.base}/Observation/oa", headers=bearer(token)).status_code == 200


def test_dynamic_jwks_uri_must_be_https(auth_server: AuthServer) -> None:
    metadata = _backend_metadata("RS384", "system/*.rs")
    del metadata["jwks"]
    metadata["jwks_uri"] = "http://127.0.0.1:1/jwks.json"  # SSRF towards loopback
    statement = _statement(auth_server.issuer_key, **metadata)
    response = _register(auth_server, {"software_statement": statement})
    assert response.status_code == 400


def test_introspection_of_own_and_foreign_tokens(auth_server: AuthServer) -> None:
    public, key = example_key("RS384")
    client = add_client(
        auth_server.database,
        auth_server.folder,
        public,
        "--name",
        "introspecting job",
        "--grant-type",
        "client_credentials",
        "--scope",
        "system/*.rs",
    )
    token = backend_token(auth_server.base, client, key, "RS384", "system/*.rs").json()
    introspect_url = f"{auth_server.root}/auth/introspect"
    token_url = f"{auth_server.root}/auth/token"
    from tests.auth.oauth_helpers import assertion

    def ask(about: str) -> dict[str, Any]:
        response = httpx.post(
            introspect_url,
            data={
                "token": about,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion(client, token_url, key, "RS384"),
            },
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    own = ask(token["access_token"])
    assert own["active"] is True and own["scope"] == "system/*.rs"
    assert own["client_id"] == client and own["exp"] > time.time()
    assert ask(auth_server.admin_token) == {"active": False}  # another client's token
    assert ask("garbage") == {"active": False}
    revoke = httpx.post(
        f"{auth_server.root}/auth/revoke",
        data={
            "token": token["access_token"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(client, token_url, key, "RS384"),
        },
    )
    assert revoke.status_code == 200
    assert ask(token["access_token"]) == {"active": False}
    # without client authentication, no answer
    anonymous = httpx.post(introspect_url, data={"token": auth_server.admin_token})
    assert anonymous.status_code == 401


def test_statement_without_keys_cannot_lend_its_system_scopes(auth_server: AuthServer) -> None:
    """A copy of a (public) statement without keys, sent with the copier's own key."""
    metadata = _backend_metadata("ES384", "system/*.rs")
    keys = metadata.pop("jwks")
    statement = _statement(auth_server.issuer_key, **metadata)
    response = _register(auth_server, {"software_statement": statement, "jwks": keys})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_software_statement"


def test_statement_without_scope_does_not_vouch_for_requested_system_scopes(
    auth_server: AuthServer,
) -> None:
    metadata = _backend_metadata("ES384", "system/*.rs")
    del metadata["scope"]
    statement = _statement(auth_server.issuer_key, **metadata)
    response = _register(auth_server, {"software_statement": statement, "scope": "system/*.rs"})
    assert response.status_code == 400
