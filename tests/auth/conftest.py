"""An authorizing openrecord server per test module (both backends), with an operator
client holding `system/*.cruds` and two patients' records written through it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from tests.auth.oauth_helpers import backend_token, bearer, example_key
from tests.databases import backends
from tests.server.conftest import Server, running_server
from tests.server.launcher import run_openrecord

SOFTWARE_ISSUER = "https://apps.example.org/software-statements"


@dataclass(frozen=True)
class AuthServer:
    server: Server
    folder: Path
    admin_client: str  # system/*.cruds, ES384 example key
    admin_key: ECKey | RSAKey
    admin_token: str
    issuer_key: RSAKey  # signs software statements; the server trusts SOFTWARE_ISSUER

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def root(self) -> str:
        return self.server.base.rsplit("/fhir", 1)[0]

    @property
    def database(self) -> str:
        return self.server.database


def admin_cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_openrecord(
        ["admin", *args, "--database", database],
        timeout=60,
    )


def add_client(database: str, folder: Path, jwks: dict[str, object], *args: str) -> str:
    """`openrecord admin add-client …`: the printed client's id."""
    path = folder / f"jwks-{len(list(folder.glob('jwks-*')))}.json"
    path.write_text(json.dumps(jwks))
    done = admin_cli(database, "add-client", "--jwks", str(path), *args)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["client_id"])


def _patient(pid: str, family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def _observation(oid: str, pid: str, code: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performer": [{"reference": "Practitioner/doc"}],
    }


SEED = [
    {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Doctor"}]},
    _patient("pa", "Alpha"),
    _patient("pb", "Bravo"),
    _observation("oa", "pa", "8867-4"),
    _observation("ob", "pb", "8867-4"),
    _observation("ob2", "pb", "2339-0"),
]


@pytest.fixture(scope="module", params=backends())
def auth_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    folder = tmp_path_factory.mktemp("auth")
    issuer_key = RSAKey.generate_key(2048, auto_kid=True)
    trusted = folder / "trusted-issuers.json"
    issuer_jwks = {"keys": [issuer_key.as_dict(private=False)]}
    trusted.write_text(json.dumps({"issuers": [{"iss": SOFTWARE_ISSUER, "jwks": issuer_jwks}]}))
    with running_server(
        request.param, folder, "--trusted-issuers", str(trusted), authorized=True
    ) as server:
        public, key = example_key("ES384")
        client = add_client(
            server.database,
            folder,
            public,
            "--name",
            "operator tool",
            "--grant-type",
            "client_credentials",
            "--scope",
            "system/*.cruds",
        )
        response = backend_token(server.base, client, key, "ES384", "system/*.cruds")
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in SEED
            ],
        }
        written = httpx.post(server.base, json=bundle, headers=bearer(token), timeout=60)
        assert written.status_code == 200, written.text
        yield AuthServer(server, folder, client, key, token, issuer_key)
