"""All shared Synthea transaction Bundles load unchanged and read back equal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.shared_data import require_shared


def synthea_bundles() -> list[Path]:
    folder = require_shared("synthea", "transaction-bundles")
    return sorted(p for p in folder.glob("*.json") if p.name != "MANIFEST.json")


def resolve(node: Any, mapping: dict[str, str]) -> Any:
    """The sent resource with urn:uuid references replaced as the server must."""
    if isinstance(node, dict):
        return {
            k: (
                mapping.get(v, v)
                if k == "reference" and isinstance(v, str)
                else resolve(v, mapping)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [resolve(v, mapping) for v in node]
    return node


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("meta", "id")}
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    if meta:
        out["meta"] = meta
    return out


@pytest.mark.slow
def test_all_synthea_bundles_load_and_read_back(client: httpx.Client) -> None:
    paths = synthea_bundles()
    assert len(paths) >= 42
    total = 0
    # Practitioners and organizations first, as a real load would; patient bundles also
    # carry their own copies, so order does not matter for correctness.
    for path in sorted(paths, key=lambda p: "Information" not in p.name):
        bundle = orjson.loads(path.read_bytes())
        response = client.post(
            "", content=orjson.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
        )
        assert response.status_code == 200, f"{path.name}: {response.text[:2000]}"
        out = response.json()["entry"]
        assert len(out) == len(bundle["entry"])
        mapping: dict[str, str] = {}
        for sent, got in zip(bundle["entry"], out, strict=True):
            assert got["response"]["status"] == "201 Created", got
            location = got["response"]["location"]
            mapping[sent["fullUrl"]] = location.split("/_history")[0]
        for sent, got in zip(bundle["entry"], out, strict=True):
            ref = got["response"]["location"].split("/_history")[0]
            stored = client.get(f"/{ref}").json()
            assert stored["id"] == ref.split("/")[1]
            assert stored["meta"]["versionId"] == "1"
            expected = resolve(sent["resource"], mapping)
            assert without_server_meta(stored) == without_server_meta(expected), ref
        total += len(out)
    assert total == 8195  # every entry of the 42 shared bundles (counted independently)
