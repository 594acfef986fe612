"""The record service: the one door to the data.

REST, Bundles, the CLI importer and (later) the portal, the assistant and background
jobs all read and write FHIR resources through `RecordService`, passing a
`SecurityContext`. It checks access, validates, assigns ids and versions, extracts
the search index, and runs each interaction in one store transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

from openrecord.fhir.definitions import Definitions, definitions
from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.fhir.patch import apply_fhirpath_patch, apply_json_patch
from openrecord.fhir.search_contained import contained_entries
from openrecord.fhir.search_index import IndexExtractor
from openrecord.fhir.search_query import parse_search
from openrecord.fhir.search_text import text_entries
from openrecord.fhir.search_values import IndexEntry
from openrecord.fhir.validation import validate_resource
from openrecord.service import access, access_writes, audit
from openrecord.service.audit import AuditTrail, audited
from openrecord.service.clock import configured_timezone, instant, now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.profile_policy import ProfilePolicy, declared_profile_issues
from openrecord.service.search_params import SearchParamRegistry
from openrecord.service.searching import SearchResult, run_search, source_for
from openrecord.store.base import (
    HistoryPage,
    Method,
    Store,
    StoredVersion,
    UnsupportedSearch,
    VersionConflict,
    WriteTx,
)
from openrecord.store.query import SearchCondition, SearchQuery

__all__ = ["Prepared", "RecordService", "SearchResult", "WriteResult"]

T = TypeVar("T")
_RETRIES = 5
# Bundle entries re-check the SearchParameter generation at most this often (seconds);
# single interactions check it every time (see service/search_params.py).
_ENTRY_SYNC_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: StoredVersion
    status: int  # 200 or 201 (204 for deletes)
    issues: list[Issue] = field(default_factory=list)  # warnings worth returning


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated resource and its search-index entries, ready to be written."""

    resource: dict[str, Any]
    index: list[IndexEntry]
    warnings: list[Issue] = field(default_factory=list)


class RecordService:
    def __init__(
        self,
        store: Store,
        *,
        defs: Definitions | None = None,
        tz: tzinfo | None = None,
        profiles: ProfilePolicy = "off",
    ) -> None:
        self.store = store
        self.base_defs = defs or definitions()
        self.profile_policy = profiles  # declared meta.profile checks on writes (server: warn)
        tz = self.tz = tz or configured_timezone()
        self.params = SearchParamRegistry(store, self.base_defs, tz)
        self.audit = AuditTrail(store)  # every public interaction below is recorded

    @property
    def defs(self) -> Definitions:
        """The definitions with the custom search parameters of the last `params.sync()`."""
        return self.params.table.defs

    @property
    def indexer(self) -> IndexExtractor:
        return self.params.table.indexer

    def warm_up(self) -> None:
        """Load custom search parameters; compile every expression and element map now."""
        self.params.sync()
        self.indexer.compile_all()
        for type_name in self.defs.resource_types:
            self.defs.children((type_name, ""))

    # -- reads -------------------------------------------------------------------------

    @audited("read", audit.by_type_id)
    def read(self, ctx: SecurityContext, type: str, id: str) -> StoredVersion:
        access.check(ctx, "read", type)
        self.require_type(type)
        self.audit.catch_up_for(type)
        source = source_for(type)  # resources kept outside the FHIR tables (CGM readings)
        found = source.read(self, ctx, id) if source is not None else None
        if found is not None:
            return found
        found = self.store.read(type, id)
        audit.touch(found)  # a refusal below is audited with what it refused
        if found is None or not self.may_read(ctx, found):
            raise FHIRError.of(404, "not-found", f"{type}/{id} is not known")
        if found.deleted:
            raise FHIRError(
                410,
                [Issue("deleted", f"{type}/{id} was deleted")],
                {"ETag": f'W/"{found.version}"'},
            )
        return found

    @audited("vread", audit.by_type_id)
    def vread(self, ctx: SecurityContext, type: str, id: str, version: str) -> StoredVersion:
        access.check(ctx, "vread", type)
        self.require_type(type)
        self.audit.catch_up_for(type)
        if not version.isdigit():
            raise FHIRError.of(404, "not-found", f"{type}/{id} has no version {version!r}")
        found = self.store.vread(type, id, int(version))
        audit.touch(found)
        if found is None or not self.may_read(ctx, found, history=True):
            raise FHIRError.of(404, "not-found", f"{type}/{id} has no version {version}")
        if found.deleted:
            raise FHIRError.of(410, "deleted", f"version {version} of {type}/{id} is a deletion")
        return found

    @audited("history", audit.by_history)
    def history(
        self,
        ctx: SecurityContext,
        type: str | None = None,
        id: str | None = None,
        **kwargs: Any,
    ) -> HistoryPage:
        access.check(ctx, "history", type)
        if type is not None:
            self.require_type(type)
        self.audit.catch_up_for(type)
        if id is not None and type is not None:
            current = self.store.read(type, id)
            audit.touch(current)
            if current is None or not self.may_read(ctx, current):
                raise FHIRError.of(404, "not-found", f"{type}/{id} is not known")
        page = self.store.history(type, id, **kwargs)
        if ctx.unrestricted:
            return page
        # Entries outside the context's reach are left out; the total would count them.
        return replace(page, entries=access.visible_history(self, ctx, page.entries), total=None)

    @audited("search", audit.by_search)
    def search(
        self,
        ctx: SecurityContext,
        type: str | None,
        params: Sequence[tuple[str, str]],
        *,
        compartment: tuple[str, str] | None = None,
        explain: bool = False,
        base: str | None = None,
    ) -> SearchResult:
        """Search `type` (None: all types): see `searching.run_search`."""
        return run_search(
            self, ctx, type, params, compartment=compartment, explain=explain, base=base
        )

    def may_read(
        self, ctx: SecurityContext, found: StoredVersion, *, history: bool = False
    ) -> bool:
        """Whether `ctx` may see `found` (a current version; `history`: any version,
        whose resource must also be readable now). A context limited to a compartment
        or a query gets 404 for deleted resources too: 410 would say they existed."""
        if ctx.unrestricted:
            return True
        if history:
            if not access.visible_history(self, ctx, [found]):
                return False
            current = self.store.read(found.type, found.id)
            return current is not None and self.may_read(ctx, current)
        return bool(access.visible(self, ctx, [found]))

    # -- writes ------------------------------------------------------------------------

    @audited("create", audit.by_type)
    def create(
        self,
        ctx: SecurityContext,
        type: str,
        body: Any,
        *,
        if_none_exist: str | None = None,
    ) -> WriteResult:
        access.check(ctx, "create", type)
        self.params.sync()
        prepared = self.checked(body, type)
        access_writes.check_write(self, ctx, "create", type, None, prepared.resource)
        # the criteria find only what this context's create could reach
        within = access_writes.match_conditions(self, ctx, "create", type) if if_none_exist else []

        def run(tx: WriteTx) -> WriteResult:
            if if_none_exist:
                existing = self.match_one(tx, type, if_none_exist, lock=True, within=within)
                if existing is not None:
                    return WriteResult(existing, 200)
            version = self.write(tx, type, new_id(), prepared, None, "POST")
            return WriteResult(version, 201, prepared.warnings)

        return self.in_transaction(run)

    @audited("update", audit.by_type_id)
    def update(
        self,
        ctx: SecurityContext,
        type: str,
        id: str,
        body: Any,
        *,
        if_match: str | None = None,
    ) -> WriteResult:
        access.check(ctx, "update", type)
        self.params.sync()
        prepared = self.checked(body, type)
        resource = prepared.resource
        if "id" not in resource:
            raise FHIRError.of(400, "required", "the resource has no id", f"{type}.id")
        if resource["id"] != id:
            raise FHIRError.of(
                400,
                "invalid",
                f"resource id {resource['id']!r} differs from {id!r} in the URL",
                f"{type}.id",
            )

        access_writes.check_write(self, ctx, "update", type, None, resource)

        def run(tx: WriteTx) -> WriteResult:
            current = None if ctx.unrestricted else tx.current(type, id)
            access_writes.check_write(self, ctx, "update", type, current, None)
            return self.update_in(tx, type, id, prepared, if_match)

        return self.in_transaction(run)

    @audited("update", audit.by_criteria)
    def conditional_update(
        self,
        ctx: SecurityContext,
        type: str,
        criteria: str,
        body: Any,
        *,
        if_match: str | None = None,
    ) -> WriteResult:
        access.check(ctx, "update", type)
        self.params.sync()
        prepared = self.checked(body, type)
        resource = prepared.resource
        within = access_writes.match_conditions(self, ctx, "update", type)

        def allowed(id: str, current: StoredVersion | None) -> None:  # as for PUT Type/id
            access_writes.check_write(self, ctx, "update", type, current, {**resource, "id": id})

        def run(tx: WriteTx) -> WriteResult:
            found = self.match_one(tx, type, criteria, lock=True, within=within)
            if found is None:
                if "id" in resource:
                    id = resource["id"]
                    allowed(id, None if ctx.unrestricted else tx.current(type, id))
                    return self.update_in(tx, type, id, prepared, if_match)
                id = new_id()
                allowed(id, None)
                version = self.write(tx, type, id, prepared, None, "PUT")
                return WriteResult(version, 201, prepared.warnings)
            if resource.get("id", found.id) != found.id:
                raise FHIRError.of(
                    400,
                    "invalid",
                    "the resource id differs from the one the criteria match",
                    f"{type}.id",
                )
            allowed(found.id, found)
            return self.update_in(tx, type, found.id, prepared, if_match)

        return self.in_transaction(run)

    @audited("patch", audit.by_type_id)
    def patch(
        self,
        ctx: SecurityContext,
        type: str,
        id: str,
        document: Any,
        *,
        fhirpath: bool,
        if_match: str | None = None,
    ) -> WriteResult:
        access.check(ctx, "patch", type)
        self.require_type(type)
        self.params.sync()

        def run(tx: WriteTx) -> WriteResult:
            if not ctx.unrestricted:
                current = tx.current(type, id)
                access_writes.check_write(self, ctx, "patch", type, current, None)
            result = self.patch_in(tx, type, id, document, fhirpath=fhirpath, if_match=if_match)
            if not ctx.unrestricted and result.version.data is not None:
                after = orjson.loads(result.version.data)  # rolls back when outside
                access_writes.check_write(self, ctx, "patch", type, None, after)
            return result

        return self.in_transaction(run)

    @audited("delete", audit.by_type_id)
    def delete(
        self, ctx: SecurityContext, type: str, id: str, *, if_match: str | None = None
    ) -> WriteResult | None:
        """Delete; None when there was nothing to delete (the spec allows 204 then too)."""
        access.check(ctx, "delete", type)
        self.require_type(type)

        def run(tx: WriteTx) -> WriteResult | None:
            if not ctx.unrestricted:
                current = tx.current(type, id)
                access_writes.check_write(self, ctx, "delete", type, current, None)
            return self.delete_in(tx, type, id, if_match)

        return self.in_transaction(run)

    @audited("delete", audit.by_criteria)
    def conditional_delete(
        self, ctx: SecurityContext, type: str, criteria: str
    ) -> WriteResult | None:
        access.check(ctx, "delete", type)
        self.require_type(type)
        within = access_writes.match_conditions(self, ctx, "delete", type)

        def run(tx: WriteTx) -> WriteResult | None:
            found = self.match_one(tx, type, criteria, lock=True, within=within)
            if found is None:
                return None
            access_writes.check_write(self, ctx, "delete", type, found, None)
            return self.delete_in(tx, type, found.id, None)

        return self.in_transaction(run)

    @audited("operation", audit.by_type)
    def validate(
        self, ctx: SecurityContext, type: str, body: Any, *, mode: str | None, id: str | None
    ) -> list[Issue]:
        """`$validate`: the issues found; never writes."""
        access.check(ctx, "operation", type)
        self.require_type(type)
        if mode == "delete":
            if id is None:
                raise FHIRError.of(400, "required", "mode=delete needs a resource id")
            self.read(ctx, type, id)
            return []
        if body is None:
            raise FHIRError.of(400, "required", "no resource to validate", "Parameters.resource")
        issues = validate_resource(body, expected_type=type)
        if (
            type == "SearchParameter"
            and isinstance(body, dict)
            and not any(i.severity in ("error", "fatal") for i in issues)
        ):
            try:
                self.params.validate(body)  # what a write would refuse
            except FHIRError as err:
                issues += err.issues
        if mode == "update":
            if isinstance(body, dict) and body.get("id") is None:
                issues.append(
                    Issue("required", "an update needs the resource id", expression=f"{type}.id")
                )
            elif id is not None and isinstance(body, dict) and body.get("id") != id:
                issues.append(
                    Issue("invalid", f"resource id differs from {id!r}", expression=f"{type}.id")
                )
        return issues

    # -- building blocks shared with Bundle processing --------------------------------

    def require_type(self, type: str) -> None:
        if type not in self.defs.resource_types:
            raise FHIRError.of(404, "not-supported", f"{type!r} is not a FHIR R4 resource type")

    def checked(self, body: Any, type: str) -> Prepared:
        """The body validated as a resource of `type`, with its search index.

        Runs before the write transaction opens, so that the CPU-heavy work of a write
        does not hold the database's write lock. 400/422 with every issue found.
        """
        self.require_type(type)
        if not isinstance(body, dict):
            raise FHIRError.of(400, "structure", "the body is not a JSON object")
        if body.get("resourceType") != type:
            raise FHIRError.of(
                400,
                "invalid",
                f"resourceType {body.get('resourceType')!r} does not match {type!r}",
                "resourceType",
            )
        issues = validate_resource(body, expected_type=type)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FHIRError(422, errors)
        if type == "SearchParameter":
            self.params.validate(body)
        issues += declared_profile_issues(body, self.profile_policy)  # 422 when strict
        indexer = self.params.sync(max_age=_ENTRY_SYNC_SECONDS).indexer
        # versionId/lastUpdated are stamped later; no search parameter reads them. The
        # full-text entries (_text, _content) go last, where the store looks for them.
        index = indexer.extract(body)
        if "contained" in body:  # each contained resource's index, kept apart by the store
            index += contained_entries(body, indexer)
        index += text_entries(body)
        return Prepared(body, index, [i for i in issues if i not in errors])

    def update_in(
        self,
        tx: WriteTx,
        type: str,
        id: str,
        prepared: Prepared,
        if_match: str | None,
    ) -> WriteResult:
        current = tx.current(type, id)
        check_if_match(if_match, current)
        if current is not None and current.data is not None:
            if same_content(current.data, prepared.resource):
                return WriteResult(current, 200)
            version = self.write(tx, type, id, prepared, current, "PUT")
            return WriteResult(version, 200, prepared.warnings)
        version = self.write(tx, type, id, prepared, current, "PUT")
        return WriteResult(version, 201, prepared.warnings)

    def patch_in(
        self,
        tx: WriteTx,
        type: str,
        id: str,
        document: Any,
        *,
        fhirpath: bool,
        if_match: str | None,
    ) -> WriteResult:
        """Apply a JSON Patch or FHIRPath Patch (`fhirpath`) to the current version."""
        current = tx.current(type, id)
        if current is None:
            raise FHIRError.of(404, "not-found", f"{type}/{id} is not known")
        if current.data is None:
            raise FHIRError.of(410, "deleted", f"{type}/{id} was deleted")
        check_if_match(if_match, current)
        before = orjson.loads(current.data)
        if fhirpath:
            after = apply_fhirpath_patch(before, document)
        else:
            after = apply_json_patch(before, document)
        if after.get("resourceType") != type or after.get("id") != id:
            raise FHIRError.of(422, "processing", "a patch may not change the resource type or id")
        prepared = self.checked(after, type)
        if same_content(current.data, prepared.resource):
            return WriteResult(current, 200)
        version = self.write(tx, type, id, prepared, current, "PATCH")
        return WriteResult(version, 200, prepared.warnings)

    def delete_in(
        self, tx: WriteTx, type: str, id: str, if_match: str | None
    ) -> WriteResult | None:
        current = tx.current(type, id)
        if if_match is not None:
            check_if_match(if_match, current)
        if current is None or current.data is None:
            return None
        version = StoredVersion(type, id, current.version + 1, now_micros(), "DELETE", None)
        tx.put(version, ())
        return WriteResult(version, 200)

    def write(
        self,
        tx: WriteTx,
        type: str,
        id: str,
        prepared: Prepared,
        current: StoredVersion | None,
        method: Method,
    ) -> StoredVersion:
        """Stamp id and meta on a prepared resource and store it as the next version."""
        number = current.version + 1 if current is not None else 1
        now = now_micros()
        resource = prepared.resource
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(number)
        meta["lastUpdated"] = instant(now)
        stamped = {"resourceType": type, "id": id, "meta": meta}
        stamped.update((k, v) for k, v in resource.items() if k not in stamped)
        version = StoredVersion(type, id, number, now, method, orjson.dumps(stamped))
        tx.put(version, prepared.index)
        return version

    def match_one(
        self,
        tx: WriteTx,
        type: str,
        criteria: str,
        *,
        lock: bool,
        within: Sequence[SearchCondition] = (),
    ) -> StoredVersion | None:
        """The one resource matching conditional criteria and the access conditions
        `within` (see access_writes.match_conditions); None for none, 412 for several."""
        query = self.conditional_query(type, criteria)
        query.conditions += within
        if lock:
            tx.lock(f"{type}?{criteria}")
        query.count = 2
        try:
            found = tx.search(query).resources
        except UnsupportedSearch as err:
            raise FHIRError.of(400, "not-supported", str(err)) from None
        if len(found) > 1:
            raise FHIRError.of(
                412, "multiple-matches", f"the criteria {criteria!r} match more than one {type}"
            )
        return found[0] if found else None

    def conditional_query(self, type: str, criteria: str) -> SearchQuery:
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if not params:
            raise FHIRError.of(400, "invalid", "conditional criteria are empty")
        parsed = parse_search(type, params, self.defs, self.tz)
        if parsed.unknown:
            # Ignoring a parameter here would widen the match and touch the wrong records.
            raise FHIRError.of(
                400,
                "not-supported",
                f"unknown search parameter(s) in conditional criteria: {', '.join(parsed.unknown)}",
            )
        return parsed.query

    def in_transaction(self, run: Callable[[WriteTx], T]) -> T:
        """Run `run` in one store transaction, retrying when a concurrent writer won a race."""
        for attempt in range(_RETRIES):
            try:
                with self.store.write() as raw:
                    tx = self.audit.watch(raw)  # the writes, audited in this transaction
                    result = run(tx)
                    sealed = self.audit.seal(tx, result)
                if sealed is not None:
                    self.audit.committed(sealed)  # its event committed with the writes
                return result
            except VersionConflict:
                if attempt == _RETRIES - 1:
                    raise FHIRError.of(
                        409, "conflict", "a concurrent update won; retry the request"
                    ) from None
        raise AssertionError("unreachable")


def new_id() -> str:
    return str(uuid.uuid4())


def check_if_match(if_match: str | None, current: StoredVersion | None) -> None:
    """Optimistic locking: `If-Match: W/"n"` must name the current version."""
    if if_match is None:
        return
    wanted = if_match.strip()
    if wanted.startswith("W/"):
        wanted = wanted[2:]
    wanted = wanted.strip('"')
    if current is None or current.data is None or str(current.version) != wanted:
        have = "none" if current is None else str(current.version)
        raise FHIRError.of(
            412, "conflict", f"If-Match {if_match} does not match the current version ({have})"
        )


_VOLATILE = ("versionId", "lastUpdated")


def same_content(stored: bytes, resource: dict[str, Any]) -> bool:
    """True when `resource` equals the stored version apart from server-managed meta."""
    old = orjson.loads(stored)
    return strip_volatile(old) == strip_volatile(resource)


def strip_volatile(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        rest = {k: v for k, v in meta.items() if k not in _VOLATILE}
        if rest:
            out["meta"] = rest
    return out
