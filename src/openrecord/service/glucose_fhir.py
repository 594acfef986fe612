"""Compact CGM readings as FHIR: `Observation/cgm-…` reads and the searches of one
patient's sensor readings, answered from the `cgm_day` rows (service/glucose.py) as
HL7 CGM IG sensor-reading Observations.

Registered with `service/searching.py` as the Observation `ResourceSource`, so
`RecordService.read` and `search` ask it first; docs/glucose.md lists exactly which
searches it answers, and why the others never see compact readings.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from datetime import tzinfo

import orjson

from openrecord.auth.scopes import Permission
from openrecord.care.glucose.fhir import LOINC, MASS_READING_CODE, reading_observation
from openrecord.care.glucose.storage import DAY_MS, DayBlock, parse_reading_id, reading_id
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import date_range
from openrecord.fhir.search_query import ParsedSearch, parse_search, split_values
from openrecord.service import access
from openrecord.service.clock import instant
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import (
    consent_hides,
    day_blocks,
    iter_range,
    refuse_granular,
    series_of,
)
from openrecord.service.records import RecordService
from openrecord.service.searching import SearchResult, register_source, run_search
from openrecord.store.base import Store, StoredVersion

__all__ = ["CompactReadings"]

_DAY_US = DAY_MS * 1000
_CURSOR = "cgm."
_SEARCH_NAMES = frozenset(
    {"patient", "subject", "patient:Patient", "subject:Patient", "code", "date"}
    | {"_count", "_cursor", "_summary", "_total", "_elements", "_format", "_pretty", "_sort"}
)
_DATE_PREFIXES = ("eq", "ge", "gt", "le", "lt")


def _may_see(
    records: RecordService, ctx: SecurityContext, patient: str, permission: Permission
) -> bool:
    """Whether `ctx` reaches `patient`'s Observations for `permission` (the type-level
    check was made): the patient compartment of a patient-level grant, and the
    patient's consents. 403 for granular scopes, which compact rows cannot be checked
    against, and for a consent that denies this app everything."""
    if ctx.unrestricted:
        return True
    refuse_granular(ctx, permission)
    own = access.patient_of(ctx, permission, "Observation")
    return (own is None or own == patient) and not consent_hides(records, ctx, patient)


def _observation(patient: str, sid: int, block: DayBlock, i: int, updated: int) -> StoredVersion:
    """A stored reading as the HL7 CGM IG sensor-reading Observation, version 1."""
    reading = block.reading(i)
    id = reading_id(sid, reading.time_us)
    body = reading_observation(reading, patient, id)
    body["meta"] |= {"versionId": "1", "lastUpdated": instant(updated)}
    return StoredVersion("Observation", id, 1, updated, "PUT", orjson.dumps(body))


class CompactReadings:
    """Compact CGM readings as Observations (`searching.ResourceSource`).

    Reads: `Observation/cgm-<series>-<ms>`. Searches: those of one patient that ask
    for the mg/dL sensor-reading code (every `code` parameter includes LOINC 99504-3):
    `patient`/`subject`, `code`, `date` (eq, ge, gt, le, lt), `_count`, `_summary`,
    `_total`, `_elements`, `_sort=date`. Such a search pages through the compact
    readings in time order, then through the sensor readings stored as ordinary
    Observations (the same search on the FHIR tables); any other parameter with that
    code is a 400, not a silently partial answer. Searches without the code never
    see compact readings (docs/glucose.md)."""

    def read(self, records: RecordService, ctx: SecurityContext, id: str) -> StoredVersion | None:
        parsed = parse_reading_id(id)
        if parsed is None:
            return None
        sid, time_us = parsed
        rows = records.store.query("SELECT patient FROM cgm_series WHERE sid = ?", [sid])
        if not rows:
            return None
        patient = str(rows[0][0])
        if not _may_see(records, ctx, patient, "r"):
            return None  # the store answers (404), as for another patient's resource
        found = records.store.read("Patient", patient)  # existence only: access was checked
        if found is None or found.deleted:
            return None
        day = time_us // _DAY_US
        for block, updated in day_blocks(records.store, sid, day, day):
            ms = time_us // 1000 - day * DAY_MS
            at = bisect_left(block.times, ms)
            if at < len(block) and block.times[at] == ms:
                return _observation(patient, sid, block, at, updated)
        return None

    def search(
        self,
        records: RecordService,
        ctx: SecurityContext,
        params: Sequence[tuple[str, str]],
        compartment: tuple[str, str] | None,
    ) -> SearchResult | None:
        codes = [v for k, v in params if k == "code"]
        if not codes or not all(_names_reading_code(v) for v in codes):
            return None
        params = access.resolve_me(ctx, params)  # `patient=me`, as run_search does
        unsupported = sorted({k for k, _ in params if k not in _SEARCH_NAMES})
        if unsupported:
            raise FHIRError.of(
                400,
                "not-supported",
                "searches of CGM sensor readings (code 99504-3) answer patient, subject,"
                " code, date, _count, _summary, _total, _elements and _sort=date;"
                f" not {', '.join(unsupported)}",
                unsupported[0],
            )
        cursor = next((v for k, v in params if k == "_cursor"), None)
        rest = [(k, v) for k, v in params if k != "_cursor"]
        parsed = parse_search("Observation", rest, records.defs, records.tz)
        patient = _the_patient(params, compartment)
        lo, hi = _date_window(params, records.tz)
        for key, value in params:
            if key == "_sort" and value not in ("date", "effective"):
                raise FHIRError.of(
                    400, "not-supported", "CGM sensor readings are sorted by date only", "_sort"
                )
        plain = [(k, v) for k, v in rest if k not in ("_count", "_summary", "_total")]
        count = parsed.query.count
        want_total = parsed.summary == "count" or parsed.query.total or parsed.query.total_estimate

        def fhir_tables(extra: list[tuple[str, str]]) -> SearchResult:
            return run_search(
                records, ctx, "Observation", plain + extra, compartment=compartment, sources=False
            )

        sid = None
        if patient is not None and _may_see(records, ctx, patient, "s"):
            sid = series_of(records.store, patient)
        total = None
        if want_total:
            compact = 0
            if sid is not None:
                compact = sum(b - a for b, a in _counted(records.store, sid, lo, hi))
            stored = fhir_tables([("_summary", "count")]).total or 0
            total = compact + stored
        if parsed.summary == "count":
            return SearchResult([], total, False, parsed)
        if cursor is not None and not cursor.startswith(_CURSOR):
            raise FHIRError.of(400, "invalid", "this _cursor is not from this search", "_cursor")
        phase, _, position = (cursor or f"{_CURSOR}c.").removeprefix(_CURSOR).partition(".")
        if phase == "f":  # the compact readings are done: the FHIR tables' pages
            page = fhir_tables(
                [("_count", str(count))] + ([("_cursor", position)] if position else [])
            )
            return _wrapped(page, parsed, total)
        if phase != "c" or not (position == "" or position.lstrip("-").isdigit()):
            raise FHIRError.of(400, "invalid", "this _cursor is not from this search", "_cursor")
        start = lo if position == "" else max(lo, int(position) + 1)
        found: list[StoredVersion] = []
        if sid is not None and patient is not None and count > 0:
            found = _page(records.store, patient, sid, start, hi, count + 1)
        if len(found) > count:
            last = _time_of(found[count - 1].id)
            return SearchResult(
                found[:count], total, True, parsed, next_cursor=f"{_CURSOR}c.{last}"
            )
        if not found and cursor is None:  # nothing compact: the FHIR tables' first page
            return _wrapped(fhir_tables([("_count", str(count))]), parsed, total)
        more = bool(fhir_tables([("_count", "1")]).resources)
        return SearchResult(
            found, total, more, parsed, next_cursor=f"{_CURSOR}f." if more else None
        )


def _time_of(id: str) -> int:
    parsed = parse_reading_id(id)
    assert parsed is not None
    return parsed[1]


def _wrapped(page: SearchResult, parsed: ParsedSearch, total: int | None) -> SearchResult:
    cursor = None if page.next_cursor is None else f"{_CURSOR}f.{page.next_cursor}"
    return SearchResult(
        page.resources,
        total,
        cursor is not None,
        parsed,
        included=page.included,
        next_cursor=cursor,
    )


def _names_reading_code(value: str) -> bool:
    """Whether a `code` value (OR list) asks for the mg/dL sensor-reading code."""
    for item in split_values(value):
        system, bar, code = item.rpartition("|")
        if code == MASS_READING_CODE and (not bar or system == LOINC):
            return True
    return False


def _the_patient(
    params: Sequence[tuple[str, str]], compartment: tuple[str, str] | None
) -> str | None:
    """The one patient the search names (400 for none or several); None when the
    search names two different patients (it matches nothing)."""
    named: set[str] = set()
    for key, value in params:
        if key.partition(":")[0] not in ("patient", "subject"):
            continue
        if "," in value:
            raise FHIRError.of(
                400, "not-supported", "CGM sensor readings are searched one patient at a time", key
            )
        kind, _, id = value.rpartition("/")
        if kind not in ("", "Patient"):
            return None  # not a local Patient (another type, an absolute URL): no reading
        named.add(id)
    if compartment is not None:
        if compartment[0] != "Patient":
            return None
        named.add(compartment[1])
    if not named:
        raise FHIRError.of(
            400,
            "not-supported",
            "searches of CGM sensor readings (code 99504-3) need the patient (patient=…)",
            "patient",
        )
    return named.pop() if len(named) == 1 else None


def _date_window(params: Sequence[tuple[str, str]], zone: tzinfo) -> tuple[int, int]:
    """[lo, hi) in µs from the `date` parameters (readings are instants)."""
    lo, hi = -(2**62), 2**62
    for key, raw in params:
        if key != "date":
            continue
        prefix, text = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
        found = date_range(text, zone) if prefix in _DATE_PREFIXES else None
        if found is None:
            raise FHIRError.of(
                400,
                "not-supported",
                f"date={raw}: CGM sensor readings answer eq, ge, gt, le and lt of a date",
                "date",
            )
        first, last = found
        if prefix in ("eq", "ge"):
            lo = max(lo, first)
        if prefix == "gt":
            lo = max(lo, last + 1)
        if prefix in ("eq", "le"):
            hi = min(hi, last + 1)
        if prefix == "lt":
            hi = min(hi, first)
    return lo, hi


def _counted(store: Store, sid: int, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """(end, start) positions of the readings in [lo, hi) of each stored day."""
    if lo >= hi:
        return
    first = max(lo, -(2**62))
    rows = store.query(
        "SELECT day, n, times FROM cgm_day WHERE sid = ? AND day >= ? AND day <= ?",
        [sid, first // _DAY_US, (hi - 1) // _DAY_US],
    )
    for day, n, times in rows:
        base = int(day) * _DAY_US
        if lo <= base and base + _DAY_US <= hi:
            yield int(n), 0
            continue
        block = DayBlock.unpack(int(day), times, b"", None)
        a = bisect_left(block.times, max(0, -(-(lo - base) // 1000)))
        b = bisect_left(block.times, min(DAY_MS, -(-(hi - base) // 1000)))
        yield b, a


def _page(
    store: Store, patient: str, sid: int, start: int, end: int, limit: int
) -> list[StoredVersion]:
    """Up to `limit` readings with start ≤ time < end, as Observations, in time order."""
    out: list[StoredVersion] = []
    if start >= end:
        return out
    for block, updated, a_ms, b_ms in iter_range(store, sid, start, end):
        a = bisect_left(block.times, a_ms)
        b = bisect_left(block.times, b_ms)
        for i in range(a, b):
            out.append(_observation(patient, sid, block, i, updated))
            if len(out) >= limit:
                return out
    return out


register_source("Observation", CompactReadings())
