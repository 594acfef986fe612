"""The `openrecord` command: import (re-runnable) and demo, on each backend."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from openrecord.store import open_store
from tests.databases import backends, fresh_database
from tests.shared_data import require_shared


@pytest.fixture(params=backends())
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def openrecord(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrecord", *args], capture_output=True, text=True, timeout=600
    )


def versions(database: str) -> int:
    """How many versions of records the server holds (history total), leaving out the
    AuditEvents that every import writes about itself."""
    store = open_store(database)
    try:
        total = store.history(count=1).total
        audit = store.history("AuditEvent", count=1).total
        assert total is not None and audit is not None
        return total - audit
    finally:
        store.close()


def test_import_ndjson_folder_is_safe_to_rerun(database: str) -> None:
    folder = require_shared("synthea", "bulk-ndjson-10-patients")
    files = sorted(p for p in folder.glob("*.ndjson") if p.name != "log.ndjson")
    expected = sum(1 for f in files for line in f.read_bytes().splitlines() if line.strip())
    first = openrecord("import", "--quiet", "--database", database, *map(str, files))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"imported {expected:,} resources" in first.stdout
    assert versions(database) == expected
    again = openrecord("import", "--quiet", "--database", database, *map(str, files))
    assert again.returncode == 0, again.stderr
    # Same content again: no duplicates and no new versions.
    assert versions(database) == expected
    # Each resource kept its own id.
    line = orjson.loads(files[0].read_bytes().splitlines()[0])
    store = open_store(database)
    try:
        found = store.read(line["resourceType"], line["id"])
        assert found is not None and found.version == 1
    finally:
        store.close()


def test_import_transaction_bundle_twice(database: str) -> None:
    folder = require_shared("synthea", "transaction-bundles")
    bundle = sorted(p for p in folder.glob("*.json") if p.name != "MANIFEST.json")[0]
    entries = len(orjson.loads(bundle.read_bytes())["entry"])
    assert openrecord("import", "--quiet", "--database", database, str(bundle)).returncode == 0
    assert versions(database) == entries
    assert openrecord("import", "--quiet", "--database", database, str(bundle)).returncode == 0
    assert versions(database) == entries


def test_import_reports_bad_files(database: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient", "gender": "robot"}')
    result = openrecord("import", "--quiet", "--database", database, str(bad))
    assert result.returncode == 1
    assert "Patient.gender" in result.stderr
    missing = openrecord("import", "--database", database, str(tmp_path / "nope.json"))
    assert missing.returncode == 2


def test_demo_loads_patients(database: str) -> None:
    result = openrecord("demo", "--database", database)
    assert result.returncode == 0, result.stderr
    store = open_store(database)
    try:
        from openrecord.store.query import SearchQuery

        page = store.search(SearchQuery(type="Patient", count=100, total=True))
        assert page.total == 6
    finally:
        store.close()
