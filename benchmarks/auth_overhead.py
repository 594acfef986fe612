#!/usr/bin/env python3
"""What authorization adds to a request: the same read with `--open` and with tokens.

Two `openrecord serve` processes (one worker each) on one database — one `--open`,
one authorizing — answer `GET Patient/[id]` over keep-alive connections, request by
request in turn so both see the same machine load: no token (open), a
`system/*.rs` token (signature check cached, revocation row looked up, scope check),
and a `patient/*.rs` token (the same plus the compartment check of the resource).
Prints the median and mean latency of each and the difference to open; then, without
HTTP, the cost of one bearer check (`BearerVerifier.context`: cached signature, expiry,
audience, revocation) and `RecordService.read` with each token's own context, with the
audit append turned off (the access checks alone: what authorization adds) and on.

    python benchmarks/auth_overhead.py [--database URL] [--rounds 40] [--per-round 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from openrecord.auth.authorization import complete_authorization  # noqa: E402
from openrecord.auth.bearer import BearerVerifier  # noqa: E402
from openrecord.auth.common import s256  # noqa: E402
from openrecord.auth.keys import KeyRing  # noqa: E402
from openrecord.service.context import SecurityContext  # noqa: E402
from openrecord.service.records import RecordService  # noqa: E402
from openrecord.store import open_store  # noqa: E402
from openrecord.store.base import Store  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _server import free_port, wait_up  # noqa: E402


def serve(database: str, *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, "-m", "openrecord", "serve", "--database", database]
    command += ["--port", str(port), "--workers", "1", "--log-level", "warning", *extra]
    # no periodic AuditEvent catch-up: each server's pass would hold SQLite's writer
    # while the other appends (noise; reads do not need it, only AuditEvent reads do)
    env = {**os.environ, "OPENRECORD_AUDIT_CATCH_UP_SECONDS": "0"}
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
    root = f"http://127.0.0.1:{port}"
    wait_up(f"{root}/healthz", proc, timeout=180)  # start-up is slow on a loaded machine
    return root, proc


def system_token(root: str, database: str, folder: Path) -> str:
    key = ECKey.generate_key("P-384", auto_kid=True)
    jwks = folder / "bench-jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False) | {"alg": "ES384"}]}))
    command = [sys.executable, "-m", "openrecord", "admin", "add-client", "--database", database]
    command += ["--name", "bench", "--grant-type", "client_credentials", "--jwks", str(jwks)]
    command += ["--scope", "system/*.cruds"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(done.stdout)["client_id"]
    token_url = f"{root}/auth/token"
    claims = {
        "iss": client,
        "sub": client,
        "aud": token_url,
        "exp": int(time.time()) + 240,
        "jti": uuid.uuid4().hex,
    }
    signed = jwt.encode({"alg": "ES384", "kid": key.kid}, claims, key, algorithms=["ES384"])
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.cruds",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def patient_token(root: str, database: str, patient: str) -> str:
    redirect = "http://127.0.0.1:9/cb"
    app = httpx.post(
        f"{root}/auth/register",
        json={
            "client_name": "bench app",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
        },
    ).json()["client_id"]
    verifier = "v" * 64
    scope = "launch/patient patient/*.rs"
    location = httpx.get(
        f"{root}/auth/authorize",
        params={
            "response_type": "code",
            "client_id": app,
            "redirect_uri": redirect,
            "scope": scope,
            "state": "s",
            "aud": f"{root}/fhir",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        },
    ).headers["location"]
    request_id = parse_qs(urlsplit(location).query)["request"][0]
    store = open_store(database)
    try:
        url = complete_authorization(
            store,
            request_id,
            user_id="bench",
            fhir_user=None,
            patient=patient,
            granted_scopes=scope.split(),
        )
    finally:
        store.close()
    code = parse_qs(urlsplit(url).query)["code"][0]
    response = httpx.post(
        f"{root}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": app,
            "code_verifier": verifier,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def timed(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        response = client.get(url, headers=headers)
        out.append(time.perf_counter() - t)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:200]}")
    return out


def in_process(store: Store, contexts: dict[str, SecurityContext], rounds: int) -> None:
    """`RecordService.read` of the same Patient with each token's own context, with
    and without the audit append (what the access checks cost, apart from auditing)."""
    records = RecordService(store)
    records.warm_up()
    for audit in (False, True):
        records.audit.enabled = audit
        per_round = 200 if not audit else 50
        samples: dict[str, list[float]] = {name: [] for name in contexts}
        order = list(contexts.items())
        for round_ in range(rounds):
            shift = round_ % len(order)
            for name, ctx in order[shift:] + order[:shift]:
                t = time.perf_counter()
                for _ in range(per_round):
                    records.read(ctx, "Patient", "bench-p")
                samples[name].append((time.perf_counter() - t) / per_round * 1e6)
        label = "with the audit append" if audit else "access checks only (audit off)"
        print(f"  RecordService.read in-process, {label}:")
        base = statistics.median(samples["open (no token)"])
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"    {name:<20} median {median:.1f} µs (+{median - base:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", help="default: a fresh SQLite file")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=100)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="openrecord-auth-bench-"))
    database = args.database or f"sqlite:///{folder / 'bench.sqlite'}"
    auth_root, auth_proc = serve(database)
    open_root, open_proc = serve(database, "--open")
    try:
        system = system_token(auth_root, database, folder)
        patient = {"resourceType": "Patient", "id": "bench-p", "name": [{"family": "Bench"}]}
        httpx.put(
            f"{auth_root}/fhir/Patient/bench-p",
            json=patient,
            headers={"Authorization": f"Bearer {system}"},
        ).raise_for_status()
        for i in range(200):  # some other records, so the compartment check is not trivial
            obs = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/bench-p" if i % 2 else f"Patient/other-{i}"},
            }
            httpx.post(f"{open_root}/fhir/Observation", json=obs).raise_for_status()
        ptoken = patient_token(auth_root, database, "bench-p")
        cases = {
            "open (no token)": (open_root, {}),
            "system/*.rs token": (auth_root, {"Authorization": f"Bearer {system}"}),
            "patient/*.rs token": (auth_root, {"Authorization": f"Bearer {ptoken}"}),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        clients = {name: httpx.Client() for name in cases}
        for name, (root, headers) in cases.items():  # warm up
            timed(clients[name], f"{root}/fhir/Patient/bench-p", headers, 200)
        order = list(cases.items())
        for round_ in range(args.rounds):
            # request by request, each case first, second and third in turn: blocks of
            # requests per case showed the machine's drift as a difference between cases
            for i in range(args.per_round):
                shift = (round_ + i) % len(order)
                for name, (root, headers) in order[shift:] + order[:shift]:
                    url = f"{root}/fhir/Patient/bench-p"
                    samples[name] += timed(clients[name], url, headers, 1)
        backend = database.split(":", 1)[0]
        print(f"GET Patient/[id], {backend}, {args.rounds * args.per_round} requests per case")
        base_median = statistics.median(samples["open (no token)"]) * 1e3
        base_mean = statistics.fmean(samples["open (no token)"]) * 1e3
        for name, values in samples.items():
            median = statistics.median(values) * 1e3
            mean = statistics.fmean(values) * 1e3
            print(
                f"  {name:<20} median {median:.3f} ms (+{median - base_median:.3f})"
                f"  mean {mean:.3f} ms (+{mean - base_mean:.3f})"
            )
        store = open_store(database)
        try:
            verifier = BearerVerifier(store, KeyRing(store))
            audience = f"{auth_root}/fhir"
            header = f"Bearer {system}"
            verifier.context(header, audience)
            n = 5000
            t = time.perf_counter()
            for _ in range(n):
                verifier.context(header, audience)
            per = (time.perf_counter() - t) / n * 1e6
            print(f"  bearer check in-process (cached signature + revocation check): {per:.1f} µs")
            contexts = {
                "open (no token)": SecurityContext.open(),
                "system/*.rs token": verifier.context(header, audience),
                "patient/*.rs token": verifier.context(f"Bearer {ptoken}", audience),
            }
            in_process(store, contexts, args.rounds)
        finally:
            store.close()
    finally:
        for proc in (auth_proc, open_proc):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
