"""FHIR packages: stored as resources by `openrecord packages add`, put to use at start-up.

A package's conformance resources (StructureDefinition, SearchParameter, ValueSet,
CodeSystem, ConceptMap) are the record: they are written through `RecordService`
like any resource, in one transaction with the package's row in the `fhir_package`
state table (name, version, canonical, FHIR versions, load time, and the
`[type, id]` of each resource written). Loading a package again updates it in place;
unchanged resources make no new versions.

Active SearchParameters are searchable as soon as they commit (the custom-parameter
registry, `service/search_params.py`). Profiles and terminology are put to use when
a server process starts (`activate_packages`, in every worker): the packages'
CodeSystems, ValueSets and ConceptMaps join the terminology, and their profiles —
snapshots generated from differentials in dependency order, on R4 core, the shipped
profiles or each other — become validatable. What ships (R4 core terminology, US
Core, the HL7 CGM IG) always wins over a loaded copy of the same canonical URL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from openrecord.fhir.definitions import Definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.profile_snapshots import (
    CORE_PREFIX,
    SnapshotError,
    compact_from_differential,
)
from openrecord.fhir.profiles import base_profile, register_profiles
from openrecord.fhir.terminology import terminology
from openrecord.fhir.terminology_resources import add_terminology
from openrecord.service import access
from openrecord.service.context import SecurityContext
from openrecord.service.package_files import PackageContents
from openrecord.service.records import Prepared, RecordService
from openrecord.store.base import WriteTx

__all__ = [
    "Activation",
    "InstalledPackage",
    "LoadReport",
    "activate_packages",
    "add_package",
    "installed_packages",
    "profiles_of",
]

_log = logging.getLogger(__name__)
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class InstalledPackage:
    name: str
    version: str
    canonical: str
    fhir_versions: str
    loaded_at: int  # microseconds since the epoch, UTC
    resources: list[tuple[str, str]]


@dataclass(slots=True)
class LoadReport:
    written: dict[str, int] = field(default_factory=dict)  # per type, new or changed
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # "Type/id: why"
    built_in: list[str] = field(default_factory=list)  # SearchParameters R4 already has


@dataclass(slots=True)
class Activation:
    profiles: list[str] = field(default_factory=list)
    code_systems: list[str] = field(default_factory=list)
    value_sets: list[str] = field(default_factory=list)
    concept_maps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def add_package(
    records: RecordService, ctx: SecurityContext, package: PackageContents
) -> LoadReport:
    """Store the package's conformance resources and record it, in one transaction.

    A resource base R4 validation refuses, or a SearchParameter the server cannot use,
    is skipped and reported; one that repeats a built-in parameter is not stored either
    (the built-in one answers). The rest is written. A resource whose id is taken by a
    different canonical gets an id derived from its URL, so packages never overwrite
    each other's resources.
    """
    report = LoadReport()
    planned: list[tuple[str, str, Prepared]] = []
    taken: set[tuple[str, str]] = set()
    records.params.sync()
    for resource in package.resources:
        rtype = str(resource["resourceType"])
        access.check(ctx, "update", rtype)
        if rtype == "SearchParameter" and _built_in(records, resource):
            report.built_in.append(str(resource.get("url") or resource.get("id")))
            continue
        rid = _resource_id(records, ctx, resource, taken)
        body = dict(resource, id=rid)
        try:
            prepared = records.checked(body, rtype)
        except FHIRError as err:
            issue = err.issues[0]
            where = f" at {issue.expression}" if issue.expression else ""
            report.skipped.append(f"{rtype}/{rid}: {issue.diagnostics}{where}")
            continue
        taken.add((rtype, rid))
        planned.append((rtype, rid, prepared))

    def run(tx: WriteTx) -> None:
        report.written.clear()
        report.unchanged = 0
        for rtype, rid, prepared in planned:
            before = tx.current(rtype, rid)
            result = records.update_in(tx, rtype, rid, prepared, None)
            if before is None or result.version.version != before.version:
                report.written[rtype] = report.written.get(rtype, 0) + 1
            else:
                report.unchanged += 1
        tx.execute("DELETE FROM fhir_package WHERE name = ?", (package.name,))
        tx.execute(
            "INSERT INTO fhir_package (name, version, canonical, fhir_versions, loaded_at,"
            " resources) VALUES (?, ?, ?, ?, ?, ?)",
            (
                package.name,
                package.version,
                package.canonical,
                ",".join(package.fhir_versions),
                int(time.time() * 1_000_000),
                orjson.dumps([[t, i] for t, i, _ in planned]).decode(),
            ),
        )

    records.in_transaction(run)
    return report


def _built_in(records: RecordService, resource: dict[str, Any]) -> bool:
    """A SearchParameter whose code R4 defines for each of its bases (US Core repeats
    many) or a search-result parameter (`_id`, `_lastUpdated`): the server answers it
    already, and an active duplicate would be refused."""
    code, bases = resource.get("code"), resource.get("base")
    if not isinstance(code, str) or not isinstance(bases, list) or not bases:
        return False
    params = records.base_defs.search_params
    return code.startswith("_") or all(code in params.get(str(b), {}) for b in bases)


def _resource_id(
    records: RecordService,
    ctx: SecurityContext,
    resource: dict[str, Any],
    taken: set[tuple[str, str]],
) -> str:
    rtype, url = str(resource["resourceType"]), resource.get("url")
    digest = hashlib.sha256(str(url).encode()).hexdigest()[:16]
    wanted = resource.get("id")
    if not isinstance(wanted, str) or not _ID.fullmatch(wanted):
        return f"pkg-{digest}"
    if (rtype, wanted) in taken:
        return f"{wanted[:47]}-{digest}"
    try:
        current = records.read(ctx, rtype, wanted)
    except FHIRError:
        return wanted  # not there, or deleted: the id is free
    assert current.data is not None
    if orjson.loads(current.data).get("url") == url:
        return wanted
    return f"{wanted[:47]}-{digest}"


def installed_packages(records: RecordService) -> list[InstalledPackage]:
    """The loaded packages, oldest first."""
    rows = records.store.query(
        "SELECT name, version, canonical, fhir_versions, loaded_at, resources"
        " FROM fhir_package ORDER BY loaded_at, name"
    )
    return [
        InstalledPackage(
            str(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            int(r[4]),
            [(str(t), str(i)) for t, i in orjson.loads(r[5])],
        )
        for r in rows
    ]


def activate_packages(records: RecordService) -> Activation:
    """Put every loaded package's terminology and profiles to use in this process."""
    ctx = SecurityContext.open("package activation")
    resources: list[dict[str, Any]] = []
    for package in installed_packages(records):
        for rtype, rid in package.resources:
            try:
                found = records.read(ctx, rtype, rid)
            except FHIRError:
                continue  # deleted since: no longer used
            assert found.data is not None
            resources.append(orjson.loads(found.data))
    done = Activation()
    added = add_terminology(terminology(), resources)
    done.code_systems, done.value_sets = added.code_systems, added.value_sets
    done.concept_maps = added.concept_maps
    compacts, done.problems = profiles_of(resources, records.base_defs)
    done.profiles = register_profiles(compacts)
    if resources:
        _log.info(
            "packages: %d profiles, %d code systems, %d value sets, %d concept maps in use",
            len(done.profiles),
            len(done.code_systems),
            len(done.value_sets),
            len(done.concept_maps),
        )
    for problem in done.problems:
        _log.warning("packages: %s", problem)
    return done


def profiles_of(
    resources: list[dict[str, Any]], defs: Definitions
) -> tuple[list[dict[str, Any]], list[str]]:
    """Compact snapshots of the constraint profiles among `resources`, bases first."""
    pending = {
        str(r["url"]): dict(r)
        for r in resources
        if r.get("resourceType") == "StructureDefinition"
        and r.get("derivation") == "constraint"
        and isinstance(r.get("url"), str)
        and (r.get("differential") or r.get("snapshot"))
    }
    for sd in pending.values():
        if not sd.get("differential"):  # a snapshot alone: merged the same way
            sd["differential"] = sd["snapshot"]
    built: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    def base_of(url: str) -> dict[str, Any] | None:
        return built.get(url) or base_profile(url)

    while pending:
        ready = [
            sd
            for sd in pending.values()
            if str(sd.get("baseDefinition", "")).split("|")[0] in built
            or base_profile(str(sd.get("baseDefinition", ""))) is not None
            or str(sd.get("baseDefinition", "")) == CORE_PREFIX + str(sd.get("type"))
        ]
        if not ready:
            problems += [
                f"{u}: base {sd.get('baseDefinition')!r} is not loaded" for u, sd in pending.items()
            ]
            break
        for sd in ready:
            url = str(sd["url"])
            del pending[url]
            try:
                built[url] = compact_from_differential(sd, defs, base_of)
            except SnapshotError as err:
                problems.append(str(err))
            except Exception as err:  # a malformed profile must not stop the server starting
                problems.append(f"{url}: cannot be used ({type(err).__name__})")
    return list(built.values()), problems
