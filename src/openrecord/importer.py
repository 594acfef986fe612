"""Import FHIR JSON, NDJSON and Bundles from files and folders, safely re-runnable.

Re-running an import must not duplicate anything, so every resource is written
as an update to a stable id: a resource's own id, or — for a transaction entry
created from a `urn:uuid:` full URL — that UUID. Updates whose content did not
change create no new version. Resources are grouped into transactions of
`batch_size` so a crash leaves whole groups, never half of one.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from openrecord.fhir.outcome import FHIRError
from openrecord.service.bundles import BundleProcessor
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService

__all__ = ["ImportReport", "Importer", "as_idempotent_transaction"]

_UUID = "urn:uuid:"
_ENTRY_PREFIX = re.compile(r"^entry \d+: ")
_ENTRY_PATH = re.compile(r"^Bundle\.entry\[(\d+)\](.*)$")


@dataclass(slots=True)
class ImportReport:
    resources: int = 0
    files: int = 0
    errors: list[str] = field(default_factory=list)


def as_idempotent_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    """A transaction/batch/collection Bundle rewritten as PUTs to stable ids."""
    entries = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        request = entry.get("request") or {}
        method = request.get("method", "PUT")
        if method in ("GET", "HEAD", "DELETE", "PATCH"):
            entries.append(entry)
            continue
        type = resource["resourceType"]
        full_url = entry.get("fullUrl")
        id = resource.get("id")
        if id is None and isinstance(full_url, str) and full_url.startswith(_UUID):
            id = full_url[len(_UUID) :]
        if id is None:
            entries.append({**entry, "request": {"method": "POST", "url": type}})
            continue
        resource = {**resource, "id": id}
        out = {"resource": resource, "request": {"method": "PUT", "url": f"{type}/{id}"}}
        if full_url:
            out["fullUrl"] = full_url
        entries.append(out)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class Importer:
    def __init__(
        self,
        records: RecordService,
        *,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.records = records
        self.bundles = BundleProcessor(records)
        self.batch_size = batch_size
        self.progress = progress or (lambda n: None)
        self.ctx = SecurityContext.open(purpose="import")

    def import_paths(self, paths: Iterable[Path]) -> ImportReport:
        report = ImportReport()
        # Bulk files may refer to each other by conditional reference (Synthea writes
        # `Practitioner?identifier=…`): a group whose target is not there yet waits for
        # a second pass, so the order of the files does not matter.
        deferred: list[tuple[Path, Chunk]] = []
        for path in expand(paths):
            report.files += 1
            try:
                for chunk in self.bundles_in(path):
                    try:
                        self.load(chunk.bundle, report)
                    except FHIRError as err:
                        if err.status == 412:
                            deferred.append((path, chunk))
                        else:
                            report.errors.append(f"{path}: {chunk.describe(err)}")
            except (OSError, orjson.JSONDecodeError, UnicodeDecodeError) as err:
                report.errors.append(f"{path}: cannot read: {err}")
        for path, chunk in deferred:
            try:
                self.load(chunk.bundle, report)
            except FHIRError as err:
                report.errors.append(f"{path}: {chunk.describe(err)}")
        return report

    def load(self, bundle: dict[str, Any], report: ImportReport) -> None:
        n = len(bundle["entry"])
        if n:
            self.bundles.process(self.ctx, bundle)
            report.resources += n
            self.progress(n)

    def bundles_in(self, path: Path) -> Iterator[Chunk]:
        """The file's content as idempotent transactions of at most batch_size entries."""
        name = path.name.removesuffix(".gz")
        raw = read_bytes(path)
        if name.endswith(".ndjson"):
            lines = [line for line in raw.splitlines() if line.strip()]
            yield from self.chunks((orjson.loads(line) for line in lines), "line")
            return
        doc = orjson.loads(raw)
        if (
            isinstance(doc, dict)
            and doc.get("resourceType") == "Bundle"
            and doc.get("type")
            in (
                "transaction",
                "batch",
                "collection",
                "searchset",
            )
        ):
            tx = as_idempotent_transaction(doc)
            # A transaction stays whole: its urn:uuid references must resolve together.
            if doc.get("type") == "transaction":
                yield Chunk(tx, "entry", 0)
            else:
                yield from self.chunks(
                    (e["resource"] for e in tx["entry"] if "resource" in e), "entry"
                )
            return
        items = doc if isinstance(doc, list) else [doc]
        yield from self.chunks(items, "item")

    def chunks(self, resources: Iterable[Any], label: str) -> Iterator[Chunk]:
        batch: list[dict[str, Any]] = []
        first = 0
        for resource in resources:
            batch.append({"resource": resource})
            if len(batch) >= self.batch_size:
                yield Chunk(as_idempotent_transaction({"entry": batch}), label, first)
                first += len(batch)
                batch = []
        if batch:
            yield Chunk(as_idempotent_transaction({"entry": batch}), label, first)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One transaction of an import, and where its entries came from in the file."""

    bundle: dict[str, Any]
    label: str  # "line" (NDJSON), "entry" (Bundle) or "item" (JSON)
    first: int  # index of the first entry in the file

    def describe(self, err: FHIRError) -> str:
        """The error with entry numbers turned into the file's own line/entry numbers."""
        parts = []
        for issue in err.issues:
            text = _ENTRY_PREFIX.sub("", issue.diagnostics)
            where = issue.expression or ""
            m = _ENTRY_PATH.match(where)
            if m:
                number = self.first + int(m.group(1)) + 1
                entry = self.bundle["entry"][int(m.group(1))]
                type = (entry.get("resource") or {}).get("resourceType", "")
                rest = m.group(2).removeprefix(".resource")
                where = f"{self.label} {number}: {type}{rest}"
            parts.append(f"{where}: {text}" if where else text)
        return f"{err.status}: " + "; ".join(parts)


def expand(paths: Iterable[Path]) -> Iterator[Path]:
    suffixes = (".json", ".ndjson", ".json.gz", ".ndjson.gz")
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes)
            )
        else:
            yield path


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data
