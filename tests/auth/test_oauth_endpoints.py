"""The authorization server's endpoints against SMART App Launch 2.2 and the RFCs:
discovery, the CapabilityStatement's security block, the code flow for public and
confidential clients, id_token, EHR launch context, connected apps, key rotation,
and `serve --open`."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from openrecord.auth.authorization import (
    AuthorizationError,
    complete_authorization,
    create_launch,
    deny_authorization,
    list_grants,
    load_pending,
    revoke_grant,
)
from openrecord.store import open_store
from tests.auth.conftest import AuthServer, admin_cli
from tests.auth.oauth_helpers import (
    REDIRECT,
    approve,
    authorize,
    bearer,
    exchange,
    patient_login,
    register,
    register_app,
)
from tests.databases import fresh_database
from tests.server.conftest import free_port, running_server, serving

SCOPE = "launch/patient openid fhirUser patient/*.rs offline_access"


def test_smart_configuration(auth_server: AuthServer) -> None:
    response = httpx.get(f"{auth_server.base}/.well-known/smart-configuration")
    assert response.status_code == 200
    config = response.json()
    # SMART App Launch 2.2 §Conformance: the required fields
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "grant_types_supported",
        "capabilities",
        "code_challenge_methods_supported",
        "jwks_uri",
        "issuer",
    ):
        assert key in config, key
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "plain" not in config["code_challenge_methods_supported"]
    assert {"authorization_code", "client_credentials"} <= set(config["grant_types_supported"])
    assert {
        "launch-standalone",
        "launch-ehr",
        "permission-v2",
        "client-confidential-asymmetric",
    } <= set(config["capabilities"])
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert config["issuer"] == auth_server.base
    root = httpx.get(f"{auth_server.root}/.well-known/smart-configuration").json()
    assert root == config
    # every advertised endpoint answers
    assert httpx.get(config["jwks_uri"]).json()["keys"]
    assert httpx.post(config["token_endpoint"], data={}).status_code == 400


def test_openid_configuration_and_id_token(auth_server: AuthServer) -> None:
    config = httpx.get(f"{auth_server.base}/.well-known/openid-configuration").json()
    assert config["issuer"] == auth_server.base
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    app = register_app(auth_server.base)["client_id"]
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", SCOPE)
    keys = KeySet.import_key_set(httpx.get(config["jwks_uri"]).json())
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    claims = id_token.claims
    assert claims["iss"] == auth_server.base and claims["aud"] == app
    assert claims["fhirUser"] == "Patient/pa" and claims["exp"] > time.time()
    assert tokens["patient"] == "pa" and tokens["token_type"] == "Bearer"


def test_capability_statement_security_is_public(auth_server: AuthServer) -> None:
    response = httpx.get(f"{auth_server.base}/metadata")  # no token
    assert response.status_code == 200
    security = response.json()["rest"][0]["security"]
    assert security["cors"] is True
    coding = security["service"][0]["coding"][0]
    assert coding == {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR",
    }
    uris = {
        e["url"]: e["valueUri"]
        for ext in security["extension"]
        if ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        for e in ext["extension"]
    }
    config = httpx.get(f"{auth_server.base}/.well-known/smart-configuration").json()
    assert uris["authorize"] == config["authorization_endpoint"]
    assert uris["token"] == config["token_endpoint"]


def test_confidential_symmetric_clients(auth_server: AuthServer) -> None:
    for method in ("client_secret_basic", "client_secret_post"):
        client = register(
            auth_server.base,
            client_name=method,
            redirect_uris=[REDIRECT],
            token_endpoint_auth_method=method,
        )
        assert client["client_secret"] and client["client_secret_expires_at"] == 0
        auth = authorize(auth_server.base, client["client_id"], SCOPE)
        assert auth.request_id
        code = approve(auth_server.database, auth.request_id, patient="pa", scopes=SCOPE.split())
        form = {
            "grant_type": "authorization_code",
            "code": code["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": auth.verifier,
        }
        token_url = f"{auth_server.root}/auth/token"
        pair = f"{client['client_id']}:{client['client_secret']}".encode()
        good_basic = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        bad_pair = f"{client['client_id']}:wrong".encode()
        bad_basic = {"Authorization": "Basic " + base64.b64encode(bad_pair).decode()}
        if method == "client_secret_basic":
            wrong = httpx.post(token_url, data=form, headers=bad_basic)
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
            # the same secret by the other method is refused too
            post = form | {
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            }
            assert httpx.post(token_url, data=post).status_code == 401
            response = httpx.post(token_url, data=form, headers=good_basic)
        else:
            public = form | {"client_id": client["client_id"]}  # no secret
            assert httpx.post(token_url, data=public).status_code == 401
            post = form | {
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            }
            response = httpx.post(token_url, data=post)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(token)).status_code == 200


def test_ehr_launch_context(auth_server: AuthServer) -> None:
    app = register_app(auth_server.base)["client_id"]
    store = open_store(auth_server.database)
    try:
        launch = create_launch(store, patient="pa", encounter="enc-1")
        auth = authorize(
            auth_server.base, app, "launch openid fhirUser patient/*.rs", launch=launch
        )
        assert auth.request_id
        pending = load_pending(store, auth.request_id)
        assert pending is not None and pending.launch == {"patient": "pa", "encounter": "enc-1"}
        assert pending.client_id == app and pending.redirect_uri == REDIRECT
        with pytest.raises(AuthorizationError):  # the launch fixed the patient
            complete_authorization(
                store,
                auth.request_id,
                user_id="clinician",
                fhir_user="Practitioner/doc",
                patient="pb",
                granted_scopes=["launch", "patient/*.rs"],
            )
        url = complete_authorization(
            store,
            auth.request_id,
            user_id="clinician",
            fhir_user="Practitioner/doc",
            patient=None,
            granted_scopes=["launch", "openid", "fhirUser", "patient/*.rs"],
        )
    finally:
        store.close()
    code = parse_qs(urlsplit(url).query)["code"][0]
    response = exchange(auth_server.base, app, code, auth.verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient"] == "pa" and body["encounter"] == "enc-1"
    assert "refresh_token" not in body  # neither offline_access nor online_access
    unknown = authorize(auth_server.base, app, "launch patient/*.rs", launch="no-such-launch")
    assert unknown.error == "invalid_request"


def test_deny_and_granted_subset(auth_server: AuthServer) -> None:
    app = register_app(auth_server.base)["client_id"]
    auth = authorize(auth_server.base, app, SCOPE)
    assert auth.request_id
    store = open_store(auth_server.database)
    try:
        with pytest.raises(AuthorizationError):  # more than was requested
            complete_authorization(
                store,
                auth.request_id,
                user_id="u",
                fhir_user=None,
                patient="pa",
                granted_scopes=["patient/*.cruds"],
            )
        url = deny_authorization(store, auth.request_id)
        assert load_pending(store, auth.request_id) is None
        with pytest.raises(AuthorizationError):  # decided once
            deny_authorization(store, auth.request_id)
    finally:
        store.close()
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(REDIRECT) and query["error"] == ["access_denied"]
    assert query["state"] == [auth.state]


def test_connected_apps_are_listed_and_revoked(auth_server: AuthServer) -> None:
    app = register_app(auth_server.base, client_name="Glucose diary")["client_id"]
    auth = authorize(auth_server.base, app, SCOPE)
    assert auth.request_id
    code = approve(
        auth_server.database, auth.request_id, patient="pa", scopes=SCOPE.split(), user="carol"
    )
    tokens = exchange(auth_server.base, app, code["code"], auth.verifier).json()
    store = open_store(auth_server.database)
    try:
        grants = list_grants(store, "carol")
        assert [g.client_name for g in grants] == ["Glucose diary"]
        grant = grants[0]
        assert grant.patients == ("pa",) and "patient/*.rs" in grant.scopes
        # offline_access: the refresh token lives at least 3 months (ONC)
        assert grant.expires_at >= time.time() + 90 * 24 * 3600
        revoke_grant(store, "carol", app)
        assert list_grants(store, "carol") == []
    finally:
        store.close()
    response = httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401


def test_token_endpoint_input(auth_server: AuthServer) -> None:
    url = f"{auth_server.root}/auth/token"
    assert (
        httpx.post(url, data={"grant_type": "password"}).json()["error"] == "unsupported_grant_type"
    )
    as_json = httpx.post(url, json={"grant_type": "client_credentials"})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = httpx.post(
        url,
        content="grant_type=refresh_token&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"


def test_key_rotation_keeps_old_tokens_valid(auth_server: AuthServer) -> None:
    app = register_app(auth_server.base)["client_id"]
    before = patient_login(auth_server.base, auth_server.database, app, "pa", SCOPE)
    old_kids = {k["kid"] for k in httpx.get(f"{auth_server.root}/auth/jwks").json()["keys"]}
    done = admin_cli(auth_server.database, "rotate-keys")
    assert done.returncode == 0, done.stderr
    jwks = httpx.get(f"{auth_server.root}/auth/jwks").json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert old_kids < kids and len(kids) == len(old_kids) + 2
    assert all("d" not in k for k in jwks["keys"])  # public keys only
    old = httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(before["access_token"]))
    assert old.status_code == 200
    after = patient_login(auth_server.base, auth_server.database, app, "pa", SCOPE)
    assert _kid(after["access_token"].split(".")[0]) in kids - old_kids
    new = httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(after["access_token"]))
    assert new.status_code == 200


def _kid(header: str) -> str:
    return str(orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def test_open_mode_is_loopback_only(tmp_path: Any) -> None:
    database = f"sqlite:///{tmp_path / 'open.sqlite'}"
    command = [sys.executable, "-m", "openrecord", "serve", "--open", "--host", "0.0.0.0"]
    command += ["--port", str(free_port()), "--database", database]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--open" in done.stderr and "loopback" in done.stderr
    assert not (tmp_path / "open.sqlite").exists()  # refused before anything started


def test_open_mode_serves_without_tokens_and_says_so(tmp_path: Any) -> None:
    with running_server("sqlite", tmp_path) as server:  # tests' servers run --open
        assert httpx.get(f"{server.base}/Patient").status_code == 200
        security = httpx.get(f"{server.base}/metadata").json()["rest"][0]["security"]
        assert "OPEN MODE" in security["description"] and "service" not in security
        assert httpx.get(f"{server.base}/.well-known/smart-configuration").status_code == 404
    log = (tmp_path / "server.log").read_text()
    assert "NO AUTHORIZATION" in log


def test_cors_for_browser_apps(auth_server: AuthServer) -> None:
    origin = {"Origin": "https://app.example"}
    preflight = httpx.options(
        f"{auth_server.base}/Patient/pa",
        headers=origin
        | {
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    config = httpx.get(f"{auth_server.base}/.well-known/smart-configuration", headers=origin)
    assert config.headers["access-control-allow-origin"] == "*"
    token = httpx.post(f"{auth_server.root}/auth/token", data={}, headers=origin)
    assert token.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in token.headers
    unauthorized = httpx.get(f"{auth_server.base}/Patient/pa", headers=origin)
    assert unauthorized.status_code == 401
    assert "www-authenticate" in unauthorized.headers["access-control-expose-headers"].lower()


def test_dropping_compromised_keys_refuses_their_tokens(
    auth_server: AuthServer, tmp_path: Any
) -> None:
    with fresh_database(auth_server.server.backend, tmp_path) as database:
        with serving(database, tmp_path / "first.log", authorized=True) as (base, _):
            app = register_app(base)["client_id"]
            old = patient_login(base, database, app, "pa", SCOPE)["access_token"]
            assert httpx.get(f"{base}/Patient", headers=bearer(old)).status_code == 200
        done = admin_cli(database, "rotate-keys", "--drop-old")
        assert done.returncode == 0, done.stderr
        with serving(database, tmp_path / "second.log", authorized=True) as (base, _):
            assert httpx.get(f"{base}/Patient", headers=bearer(old)).status_code == 401
            new = patient_login(base, database, app, "pa", SCOPE)["access_token"]
            assert httpx.get(f"{base}/Patient", headers=bearer(new)).status_code == 200
