"""The attack suite: each attack against the real server over HTTP must be refused.

PKCE missing or `plain`; code replay; client-assertion `jti` replay; `redirect_uri`
tampering; scope escalation on refresh; expired, forged, `alg=none`, HMAC-confused,
tampered and wrong-audience tokens; refresh-token reuse (revokes the family); a
revoked app still using its token; a token for patient A reaching patient B by read,
search, `_include`, `_revinclude`, chaining, `_has`, history, compartment search,
batch and transaction Bundles.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from openrecord.auth.authorization import revoke_grant
from openrecord.store import open_store
from tests.auth.conftest import AuthServer
from tests.auth.oauth_helpers import (
    REDIRECT,
    approve,
    assertion,
    authorize,
    bearer,
    exchange,
    patient_login,
    register_app,
    root_of,
)

PATIENT_SCOPE = "launch/patient openid fhirUser patient/*.rs offline_access"


@pytest.fixture(scope="module")
def app(auth_server: AuthServer) -> str:
    return str(register_app(auth_server.base)["client_id"])


@pytest.fixture(scope="module")
def alice(auth_server: AuthServer) -> dict[str, Any]:
    """Patient A's token response (patient/*.rs), from an app of its own (the other
    tests revoke theirs)."""
    own_app = str(register_app(auth_server.base)["client_id"])
    return patient_login(auth_server.base, auth_server.database, own_app, "pa", PATIENT_SCOPE)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        orjson.loads(base64.urlsafe_b64decode(pad(header))),
        orjson.loads(base64.urlsafe_b64decode(pad(payload))),
    )


def _server_key(database: str) -> ECKey:
    """The server's own active ES256 key, read from its database (to mint tokens that
    differ from a real one in exactly one respect)."""
    store = open_store(database)
    try:
        rows = store.query(
            "SELECT private_jwk FROM auth_key WHERE alg = 'ES256' AND retired_at IS NULL"
        )
    finally:
        store.close()
    return ECKey.import_key(orjson.loads(rows[-1][0]))


def _refused(response: httpx.Response, error: str = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    if error:
        assert f'error="{error}"' in challenge
    assert response.json()["resourceType"] == "OperationOutcome"


# -- the authorization request ---------------------------------------------------------


def test_pkce_missing_is_refused(auth_server: AuthServer, app: str) -> None:
    auth = authorize(
        auth_server.base, app, PATIENT_SCOPE, code_challenge=None, code_challenge_method=None
    )
    assert auth.location.startswith(REDIRECT + "?")
    assert auth.error == "invalid_request" and auth.request_id is None


def test_pkce_plain_is_refused(auth_server: AuthServer, app: str) -> None:
    auth = authorize(
        auth_server.base,
        app,
        PATIENT_SCOPE,
        code_challenge="a" * 43,
        code_challenge_method="plain",
    )
    assert auth.error == "invalid_request" and auth.request_id is None


def test_challenge_without_method_defaults_to_plain_and_is_refused(
    auth_server: AuthServer, app: str
) -> None:
    # RFC 7636 §4.3: an absent method means "plain"
    auth = authorize(auth_server.base, app, PATIENT_SCOPE, code_challenge_method=None)
    assert auth.error == "invalid_request"


def test_unregistered_redirect_uri_is_not_followed(auth_server: AuthServer, app: str) -> None:
    for evil in ("https://evil.example/cb", REDIRECT + "/x", REDIRECT + "?x=1"):
        verifier_params = {
            "response_type": "code",
            "client_id": app,
            "redirect_uri": evil,
            "scope": PATIENT_SCOPE,
            "state": "s",
            "aud": auth_server.base,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
        response = httpx.get(f"{auth_server.root}/auth/authorize", params=verifier_params)
        assert response.status_code == 400, evil
        assert "location" not in response.headers
        assert response.json()["error"] == "invalid_request"


def test_wrong_audience_in_authorize_is_refused(auth_server: AuthServer, app: str) -> None:
    auth = authorize(auth_server.base, app, PATIENT_SCOPE, aud="https://other.example/fhir")
    assert auth.error == "invalid_request"


def test_system_scopes_cannot_be_requested_by_a_user_app(auth_server: AuthServer, app: str) -> None:
    auth = authorize(auth_server.base, app, "launch/patient system/*.rs")
    assert auth.error == "invalid_scope"


def test_missing_state_is_refused(auth_server: AuthServer, app: str) -> None:
    assert authorize(auth_server.base, app, PATIENT_SCOPE, state=None).error == "invalid_request"


# -- the code --------------------------------------------------------------------------


def test_code_replay_is_refused_and_revokes_what_it_issued(
    auth_server: AuthServer, app: str
) -> None:
    auth = authorize(auth_server.base, app, PATIENT_SCOPE)
    assert auth.request_id
    code = approve(
        auth_server.database, auth.request_id, patient="pa", scopes=PATIENT_SCOPE.split()
    )
    first = exchange(auth_server.base, app, code["code"], auth.verifier)
    assert first.status_code == 200
    token = first.json()["access_token"]
    assert httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(token)).status_code == 200
    again = exchange(auth_server.base, app, code["code"], auth.verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(token)))
    refresh = httpx.post(
        f"{auth_server.root}/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            "client_id": app,
        },
    )
    assert refresh.status_code == 400


def test_code_with_wrong_verifier_or_redirect_is_refused(auth_server: AuthServer, app: str) -> None:
    for over in ({"code_verifier": "x" * 50}, {"redirect_uri": "https://evil.example/cb"}):
        auth = authorize(auth_server.base, app, PATIENT_SCOPE)
        assert auth.request_id
        code = approve(
            auth_server.database, auth.request_id, patient="pa", scopes=PATIENT_SCOPE.split()
        )
        response = exchange(auth_server.base, app, code["code"], auth.verifier, **over)
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_code_of_another_client_is_refused(auth_server: AuthServer, app: str) -> None:
    other = register_app(auth_server.base)["client_id"]
    auth = authorize(auth_server.base, app, PATIENT_SCOPE)
    assert auth.request_id
    code = approve(
        auth_server.database, auth.request_id, patient="pa", scopes=PATIENT_SCOPE.split()
    )
    response = exchange(auth_server.base, other, code["code"], auth.verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# -- client assertions -----------------------------------------------------------------


def test_assertion_jti_replay_is_refused(auth_server: AuthServer) -> None:
    token_url = f"{auth_server.root}/auth/token"
    signed = assertion(auth_server.admin_client, token_url, auth_server.admin_key, "ES384")
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }
    assert httpx.post(token_url, data=form).status_code == 200
    replay = httpx.post(token_url, data=form)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "over",
    [
        {"aud": "https://evil.example/auth/token"},
        {"exp": int(time.time()) - 5},
        {"exp": int(time.time()) + 3600},
        {"sub": "someone-else"},
    ],
    ids=["audience", "expired", "too-long", "subject"],
)
def test_bad_assertions_are_refused(auth_server: AuthServer, over: dict[str, Any]) -> None:
    token_url = f"{auth_server.root}/auth/token"
    signed = assertion(auth_server.admin_client, token_url, auth_server.admin_key, "ES384", **over)
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_assertion_signed_by_another_key_is_refused(auth_server: AuthServer) -> None:
    token_url = f"{auth_server.root}/auth/token"
    impostor = ECKey.generate_key("P-384")
    impostor_kid = auth_server.admin_key.kid
    claims = _parts(assertion(auth_server.admin_client, token_url, auth_server.admin_key, "ES384"))[
        1
    ]
    forged = jwt.encode(
        {"alg": "ES384", "kid": impostor_kid}, claims, impostor, algorithms=["ES384"]
    )
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": forged,
        },
    )
    assert response.status_code == 401


# -- refresh tokens --------------------------------------------------------------------


def _refresh(root: str, client: str, token: str, **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client, **extra}
    return httpx.post(f"{root}/auth/token", data=data)


def test_scope_escalation_on_refresh_is_refused(auth_server: AuthServer, app: str) -> None:
    granted = "launch/patient patient/Observation.rs offline_access"
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", granted)
    wider = _refresh(
        auth_server.root,
        app,
        tokens["refresh_token"],
        scope="launch/patient patient/Observation.rs patient/Patient.rs offline_access",
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    # narrowing is allowed (RFC 6749 §6) and the narrower token is narrower
    narrower = _refresh(auth_server.root, app, tokens["refresh_token"], scope="launch/patient")
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "launch/patient"
    token = narrower.json()["access_token"]
    response = httpx.get(f"{auth_server.base}/Observation/oa", headers=bearer(token))
    assert response.status_code == 403


def test_refresh_reuse_revokes_the_family(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", PATIENT_SCOPE)
    first = tokens["refresh_token"]
    rotated = _refresh(auth_server.root, app, first)
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    latest_access = rotated.json()["access_token"]
    ok = httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(latest_access))
    assert ok.status_code == 200
    reuse = _refresh(auth_server.root, app, first)  # the stolen copy
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # the whole family is gone: the legitimate newest refresh token and access tokens
    assert _refresh(auth_server.root, app, second).status_code == 400
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(latest_access)))
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(tokens["access_token"])))


def test_refresh_token_of_another_client_is_refused(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", PATIENT_SCOPE)
    thief = register_app(auth_server.base)["client_id"]
    assert _refresh(auth_server.root, thief, tokens["refresh_token"]).status_code == 400


# -- forged and unusable access tokens -------------------------------------------------


def test_no_token_and_malformed_tokens_get_401(auth_server: AuthServer) -> None:
    response = httpx.get(f"{auth_server.base}/Patient/pa")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer("not-a-jwt")))
    basic = httpx.get(f"{auth_server.base}/Patient/pa", headers={"Authorization": "Basic eDp5"})
    _refused(basic, "invalid_request")


def test_expired_token_is_refused(auth_server: AuthServer, alice: dict[str, Any]) -> None:
    header, claims = _parts(alice["access_token"])
    claims |= {"iat": int(time.time()) - 1200, "exp": int(time.time()) - 600}
    expired = jwt.encode(header, claims, _server_key(auth_server.database))
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(expired)))


def test_wrong_audience_token_is_refused(auth_server: AuthServer, alice: dict[str, Any]) -> None:
    header, claims = _parts(alice["access_token"])
    claims["aud"] = "https://other-server.example/fhir"
    other = jwt.encode(header, claims, _server_key(auth_server.database))
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(other)))


def test_forged_token_is_refused(auth_server: AuthServer, alice: dict[str, Any]) -> None:
    header, claims = _parts(alice["access_token"])
    forged = jwt.encode(header, claims, ECKey.generate_key("P-256"))  # same kid, other key
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(forged)))


def test_tampered_token_is_refused(auth_server: AuthServer, alice: dict[str, Any]) -> None:
    header, _payload, signature = alice["access_token"].split(".")
    claims = _parts(alice["access_token"])[1] | {"patient": "pb", "scope": "system/*.cruds"}
    tampered = f"{header}.{_b64(claims)}.{signature}"
    _refused(httpx.get(f"{auth_server.base}/Patient/pb", headers=bearer(tampered)))


def test_alg_none_token_is_refused(auth_server: AuthServer, alice: dict[str, Any]) -> None:
    header, claims = _parts(alice["access_token"])
    unsigned = f"{_b64(header | {'alg': 'none'})}.{_b64(claims)}."
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(unsigned)))


def test_hmac_with_the_public_key_is_refused(
    auth_server: AuthServer, alice: dict[str, Any]
) -> None:
    header, claims = _parts(alice["access_token"])
    jwks = httpx.get(f"{auth_server.root}/auth/jwks").json()
    public = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    secret = OctKey.import_key(orjson.dumps(public))
    confused = jwt.encode(header | {"alg": "HS256"}, claims, secret, algorithms=["HS256"])
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(confused)))


# -- revocation ------------------------------------------------------------------------


def test_revoked_app_cannot_use_its_token(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", PATIENT_SCOPE)
    url = f"{auth_server.base}/Patient/pa"
    assert httpx.get(url, headers=bearer(tokens["access_token"])).status_code == 200
    store = open_store(auth_server.database)  # the patient disconnects the app
    try:
        revoke_grant(store, "user-1", app)
    finally:
        store.close()
    _refused(httpx.get(url, headers=bearer(tokens["access_token"])))
    assert _refresh(auth_server.root, app, tokens["refresh_token"]).status_code == 400


def test_rfc7009_revocation_is_immediate(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", PATIENT_SCOPE)
    url = f"{auth_server.base}/Patient/pa"
    # used first, so a worker has seen it valid (PostgreSQL workers remember that)
    assert httpx.get(url, headers=bearer(tokens["access_token"])).status_code == 200
    revoke = httpx.post(
        f"{auth_server.root}/auth/revoke",
        data={"token": tokens["access_token"], "client_id": app},
    )
    assert revoke.status_code == 200
    _refused(httpx.get(url, headers=bearer(tokens["access_token"])))
    # the refresh token still works (only the access token was revoked)…
    rotated = _refresh(auth_server.root, app, tokens["refresh_token"])
    assert rotated.status_code == 200
    # …until the refresh token is revoked: then its grant and access tokens go too
    access = rotated.json()["access_token"]
    httpx.post(
        f"{auth_server.root}/auth/revoke",
        data={"token": rotated.json()["refresh_token"], "client_id": app},
    ).raise_for_status()
    _refused(httpx.get(url, headers=bearer(access)))


def test_another_client_cannot_revoke_my_token(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", PATIENT_SCOPE)
    other = register_app(auth_server.base)["client_id"]
    revoke = httpx.post(
        f"{auth_server.root}/auth/revoke",
        data={"token": tokens["access_token"], "client_id": other},
    )
    assert revoke.status_code == 200  # RFC 7009 §2.2: no information for the caller
    url = f"{auth_server.base}/Patient/pa"
    assert httpx.get(url, headers=bearer(tokens["access_token"])).status_code == 200


# -- patient A's token must not reach patient B ----------------------------------------


def _ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in body.get("entry", [])
        if e.get("resource", {}).get("resourceType") != "OperationOutcome"
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Observation", {"Observation/oa"}),
        ("Observation?subject=Patient/pb", set()),
        ("Observation?patient=pb", set()),
        ("Observation?_id=ob,ob2,oa", {"Observation/oa"}),
        ("Observation?_include=Observation:subject", {"Observation/oa", "Patient/pa"}),
        ("Observation?_include=Observation:performer", {"Observation/oa"}),
        ("Patient?_revinclude=Observation:subject", {"Patient/pa", "Observation/oa"}),
        ("Patient", {"Patient/pa"}),
        # chains evaluate their inner condition over every Patient: refused outright
        ("Observation?subject:Patient.family=Bravo", None),
        ("Observation?subject:Patient.family=Alpha", None),
        ("Patient?_has:Observation:subject:code=2339-0", set()),
        ("Patient?_has:Observation:subject:code=8867-4", {"Patient/pa"}),
        ("?_type=Patient,Observation", {"Patient/pa", "Observation/oa"}),
        ("Observation/_history", {"Observation/oa"}),
        ("_history?_count=1000", {"Patient/pa", "Observation/oa"}),
    ],
)
def test_patient_token_searches_only_its_compartment(
    auth_server: AuthServer, alice: dict[str, Any], path: str, expected: set[str] | None
) -> None:
    response = httpx.get(f"{auth_server.base}/{path}", headers=bearer(alice["access_token"]))
    if expected is None:
        assert response.status_code == 403, response.text
        assert "Bravo" not in response.text
        return
    found = _ids(response)
    if path.startswith("_history"):  # the audit trail of A's own accesses is A's too
        found = {i for i in found if not i.startswith("AuditEvent/")}
    assert found == expected


@pytest.mark.parametrize(
    "path", ["Patient/pb", "Observation/ob", "Observation/ob/_history", "Observation/ob/_history/1"]
)
def test_patient_token_cannot_read_another_patient(
    auth_server: AuthServer, alice: dict[str, Any], path: str
) -> None:
    response = httpx.get(f"{auth_server.base}/{path}", headers=bearer(alice["access_token"]))
    assert response.status_code == 404
    assert "Bravo" not in response.text


def test_compartment_search_of_another_patient_is_refused(
    auth_server: AuthServer, alice: dict[str, Any]
) -> None:
    response = httpx.get(
        f"{auth_server.base}/Patient/pb/Observation", headers=bearer(alice["access_token"])
    )
    assert response.status_code == 403 or _ids(response) == set()


def test_batch_get_of_another_patient_is_refused(
    auth_server: AuthServer, alice: dict[str, Any]
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/pb"}},
            {"request": {"method": "GET", "url": "Observation?subject=Patient/pb"}},
            {"request": {"method": "GET", "url": "Patient/pa"}},
        ],
    }
    response = httpx.post(auth_server.base, json=bundle, headers=bearer(alice["access_token"]))
    if response.status_code == 200:
        entries = response.json()["entry"]
        assert entries[0]["response"]["status"].startswith(("403", "404"))
        assert "resource" not in entries[0] or entries[0]["resource"]["resourceType"] != "Patient"
        second = entries[1].get("resource", {})
        assert not second.get("entry"), second
        assert entries[2]["response"]["status"].startswith("200")
    else:
        assert response.status_code == 403
    assert "Bravo" not in response.text


def test_transaction_writing_another_patient_is_refused(auth_server: AuthServer, app: str) -> None:
    scope = "launch/patient patient/*.cruds"
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", scope)
    before = httpx.get(
        f"{auth_server.base}/Observation/ob", headers=bearer(auth_server.admin_token)
    ).json()
    changed = {**before, "status": "cancelled"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": changed, "request": {"method": "PUT", "url": "Observation/ob"}}],
    }
    response = httpx.post(auth_server.base, json=bundle, headers=bearer(tokens["access_token"]))
    assert response.status_code in (403, 404), response.text
    put = httpx.put(
        f"{auth_server.base}/Observation/ob", json=changed, headers=bearer(tokens["access_token"])
    )
    assert put.status_code in (403, 404)
    created = httpx.post(
        f"{auth_server.base}/Observation",
        json={k: v for k, v in changed.items() if k not in ("id", "meta")},
        headers=bearer(tokens["access_token"]),
    )
    assert created.status_code == 403
    after = httpx.get(
        f"{auth_server.base}/Observation/ob", headers=bearer(auth_server.admin_token)
    ).json()
    assert after["meta"]["versionId"] == before["meta"]["versionId"]
    assert after["status"] == "final"


def test_insufficient_scope_is_403(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(
        auth_server.base, auth_server.database, app, "pa", "launch/patient patient/Observation.rs"
    )
    response = httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(tokens["access_token"]))
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"
    assert root_of(auth_server.base)  # the helper is shared with the other modules


# -- races: a code or refresh token presented twice at the same moment ------------------


def _at_once(n: int, call: Any) -> list[httpx.Response]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def test_concurrent_code_replay_leaves_no_usable_token(auth_server: AuthServer, app: str) -> None:
    auth = authorize(auth_server.base, app, PATIENT_SCOPE)
    assert auth.request_id
    code = approve(
        auth_server.database, auth.request_id, patient="pa", scopes=PATIENT_SCOPE.split()
    )
    responses = _at_once(4, lambda: exchange(auth_server.base, app, code["code"], auth.verifier))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) <= 1
    assert all(r.status_code == 400 for r in responses if r.status_code != 200)
    for won in winners:  # the code was presented more than once: what it gave is revoked
        _refused(
            httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(won.json()["access_token"]))
        )
        assert _refresh(auth_server.root, app, won.json()["refresh_token"]).status_code == 400


def test_concurrent_refresh_reuse_leaves_no_usable_token(auth_server: AuthServer, app: str) -> None:
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", PATIENT_SCOPE)
    responses = _at_once(4, lambda: _refresh(auth_server.root, app, tokens["refresh_token"]))
    assert sum(r.status_code == 200 for r in responses) <= 1
    for won in (r for r in responses if r.status_code == 200):
        _refused(
            httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(won.json()["access_token"]))
        )
    _refused(httpx.get(f"{auth_server.base}/Patient/pa", headers=bearer(tokens["access_token"])))
