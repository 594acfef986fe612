"""Rate limits of the OAuth endpoints over HTTP, on both backends.

The server runs with small limits (`serve --rate-limit NAME=COUNT/SECONDS`) whose refill
is slow (one request every 15-30 minutes), so the counts below do not depend on how fast
the machine is. Expected values follow from the configured limits: COUNT requests pass at
once, the next one is refused with 429 and a `Retry-After` of SECONDS/COUNT (the time
until one request's worth has refilled).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.auth.conftest import add_client, admin_cli
from tests.auth.oauth_helpers import REDIRECT, assertion, example_key, pkce, root_of
from tests.auth.pages_helpers import audit_kinds
from tests.databases import backends, fresh_database
from tests.server.conftest import serving

LIMITS = (
    "token=4/3600,token-client=off,"
    "introspect=off,introspect-client=3/3600,"
    "revoke=off,revoke-client=off,client-auth-failures=3/3600,"
    "authorize=3/3600,authorize-client=off,"
    "register=2/3600"
)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module", params=backends())
def limited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(server root, database) of a server with the small LIMITS."""
    folder = tmp_path_factory.mktemp("rate")
    with (
        fresh_database(request.param, folder) as database,
        serving(database, folder / "server.log", "--rate-limit", LIMITS, authorized=True) as (
            base,
            _,
        ),
    ):
        yield root_of(base), database


def _is_refusal(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "temporarily_unavailable" and body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    # one request refills in SECONDS/COUNT; a second or two may have passed since
    assert retry_after - 3 <= int(response.headers["retry-after"]) <= retry_after


def _secret_client(database: str, name: str) -> tuple[str, str]:
    done = admin_cli(
        database,
        "add-client",
        "--name",
        name,
        "--grant-type",
        "authorization_code",
        "--redirect-uri",
        REDIRECT,
        "--auth-method",
        "client_secret_post",
    )
    assert done.returncode == 0, done.stderr
    client = json.loads(done.stdout)
    return str(client["client_id"]), str(client["client_secret"])


def test_token_endpoint_is_limited_per_address(limited: tuple[str, str]) -> None:
    root, database = limited
    url = f"{root}/auth/token"
    # 4 per hour from one address: any 4 requests pass (here refused for their
    # content), malformed ones count too
    grant = {"grant_type": "client_credentials", "client_id": "nobody"}
    assert httpx.post(url, data=grant).status_code == 401
    assert (
        httpx.post(url, content=b"{}", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert httpx.post(url, data={"grant_type": "password"}).status_code == 400
    assert httpx.post(url, data=grant).status_code == 401
    refused = httpx.post(url, data=grant)
    _is_refusal(refused, 900)
    assert "address" in refused.json()["error_description"]
    # still refused, and refusals do not push the wait further out
    again = httpx.post(url, content=b"x", headers={"Content-Type": "text/plain"})
    _is_refusal(again, int(refused.headers["retry-after"]))
    assert audit_kinds(database).count("token-throttled") == 2


def test_introspection_is_limited_per_client(limited: tuple[str, str]) -> None:
    root, database = limited
    url = f"{root}/auth/introspect"
    form = {"token": "x", "client_id": "app-one", "client_secret": "s"}
    for _ in range(3):
        assert httpx.post(url, data=form).status_code == 401  # unknown client: checked
    _is_refusal(httpx.post(url, data=form), 1200)
    # the client named in Basic credentials is the same bucket
    basic = "Basic " + base64.b64encode(b"app-one:s").decode()
    _is_refusal(httpx.post(url, data={"token": "x"}, headers={"Authorization": basic}), 1200)
    # another client is not affected
    other = form | {"client_id": "app-two"}
    assert httpx.post(url, data=other).status_code == 401
    assert audit_kinds(database).count("introspect-throttled") == 2


def test_failed_client_authentication_locks_the_secret_against_guessing(
    limited: tuple[str, str], tmp_path: Path
) -> None:
    root, database = limited
    client_id, secret = _secret_client(database, "guessed")
    other_id, other_secret = _secret_client(database, "bystander")
    url = f"{root}/auth/revoke"
    for guess in ("a", "b", "c"):  # 3 failures per hour are allowed
        wrong = httpx.post(url, data={"token": "t", "client_id": client_id, "client_secret": guess})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    # now even the right secret is refused unchecked, so a guess learns nothing
    right = {"token": "t", "client_id": client_id, "client_secret": secret}
    refused = httpx.post(url, data=right)
    _is_refusal(refused, 1200)
    assert "authentication" in refused.json()["error_description"]
    # other clients keep working (RFC 7009 §2.2: 200 for an unknown token)
    bystander = {"token": "t", "client_id": other_id, "client_secret": other_secret}
    assert httpx.post(url, data=bystander).status_code == 200
    # a successful authentication does not count against the client
    for _ in range(4):
        assert httpx.post(url, data=bystander).status_code == 200
    assert "revoke-throttled" in audit_kinds(database)


def test_bad_client_assertions_count_against_the_client_they_name(
    limited: tuple[str, str], tmp_path: Path
) -> None:
    root, database = limited
    public, key = example_key("ES384")
    client_id = add_client(
        database,
        tmp_path,
        public,
        "--name",
        "backend",
        "--grant-type",
        "client_credentials",
        "--scope",
        "system/*.rs",
    )
    url, token_url = f"{root}/auth/revoke", f"{root}/auth/token"
    impostor = ECKey.generate_key("P-384", auto_kid=True)

    def revoke(signing_key: ECKey) -> httpx.Response:
        signed = assertion(client_id, token_url, signing_key, "ES384")
        form = {
            "token": "t",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        }
        return httpx.post(url, data=form)

    for _ in range(3):
        assert revoke(impostor).status_code == 401
    _is_refusal(revoke(key), 1200)  # the real key too, while the bucket is empty


def test_authorization_requests_are_limited_without_redirecting(limited: tuple[str, str]) -> None:
    root, database = limited
    _, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": "unknown-app",
        "redirect_uri": REDIRECT,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    for _ in range(3):  # unknown client: refused, shown, not redirected
        assert httpx.get(f"{root}/auth/authorize", params=params).status_code == 400
    refused = httpx.get(f"{root}/auth/authorize", params=params)
    _is_refusal(refused, 1200)
    assert "location" not in refused.headers
    assert httpx.post(f"{root}/auth/authorize", data=params).status_code == 429
    assert audit_kinds(database).count("authorize-throttled") == 2


def test_dynamic_registration_is_limited_per_address(limited: tuple[str, str]) -> None:
    root, database = limited
    metadata = {
        "client_name": "App",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    }
    for _ in range(2):
        assert httpx.post(f"{root}/auth/register", json=metadata).status_code == 201
    _is_refusal(httpx.post(f"{root}/auth/register", json=metadata), 1800)
    _is_refusal(httpx.post(f"{root}/auth/register", content=b"not json"), 1800)
    assert audit_kinds(database).count("register-throttled") == 2


@pytest.mark.parametrize("backend", backends())
def test_processes_on_one_database_share_the_limits(backend: str, tmp_path: Path) -> None:
    """Two servers (and each with two workers) on one database: 3 requests in all."""
    with (
        fresh_database(backend, tmp_path) as database,
        serving(
            database,
            tmp_path / "a.log",
            "--rate-limit",
            "register=3/3600",
            "--workers",
            "2",
            authorized=True,
        ) as (base_a, _),
        serving(
            database,
            tmp_path / "b.log",
            "--rate-limit",
            "register=3/3600",
            "--workers",
            "2",
            authorized=True,
        ) as (base_b, _),
    ):
        metadata = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
        codes = []
        for base in (base_a, base_b, base_a, base_b, base_a, base_b):
            # a new connection each time: the workers of a server take turns at random
            with httpx.Client() as fresh:
                codes.append(
                    fresh.post(f"{root_of(base)}/auth/register", json=metadata).status_code
                )
        assert codes == [201, 201, 201, 429, 429, 429]


def test_bad_limits_are_refused_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openrecord",
            "serve",
            "--database",
            f"sqlite:///{tmp_path / 'x.sqlite'}",
            "--rate-limit",
            "token=lots",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "token=lots" in done.stderr
