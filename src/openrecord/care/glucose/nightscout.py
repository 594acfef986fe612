"""Nightscout API v1 entries ↔ readings: the pure half of the Nightscout-compatible API.

Request and answer shapes follow cgm-remote-monitor (the reference Nightscout server,
`lib/api/entries`, `lib/server/entries.js`, `lib/server/query.js`) and its swagger:

- An upload is a JSON array of entries or one entry object. An entry has `type`
  (`sgv` sensor glucose, `mbg` meter glucose, `cal` calibration…), `date` (epoch
  milliseconds), `dateString` (ISO 8601), and for `sgv` the value `sgv` in mg/dL plus
  uploader extras (`direction`, `noise`, `device`, `filtered`, `_id`/`identifier`…).
  Nightscout keeps one entry per instant and type (it upserts on `sysTime` + `type`),
  so a retried or overlapping upload replaces rather than doubles; within one request
  the last entry of an instant wins, as with Nightscout's ordered upsert.
- Dexcom's conventions as uploaded by xDrip+/Spike/Loop: `sgv` 39 is the sensor's
  "LOW" (below 40 mg/dL), 401 its "HIGH" (above 400), values below 39 are status codes
  (sensor not ready, no antenna…), not glucose. Some uploaders send the words
  `LOW`/`HIGH` instead. A limit is stored as the device limit (40 / 400 mg/dL) with the
  reading's `Limit` flag, so metrics count it in the right band.
- Units: `sgv` and `mbg` are mg/dL in Nightscout. An entry that says `units: "mmol"`
  (`mmol/L`) is converted with the issue's factor 18.0156.
- Queries (`GET /entries.json`): `count` (default 10, newest first), `find[date][$gte]`
  (also `$gt`, `$lte`, `$lt`, or `find[date]=ms`) in epoch ms, `find[dateString][…]` in
  ISO 8601, `find[sgv][…]` in mg/dL, `find[type]`. Without any date constraint the
  window is the last four days (Nightscout's `deltaAgo` of 2 * TWO_DAYS).
- `direction` is not stored with a reading; answers derive it from the slope to the
  previous reading (≤ 15 min before) with xDrip+'s arrow thresholds in mg/dL/min
  (≤ -3.5 DoubleDown, ≤ -2 SingleDown, ≤ -1 FortyFiveDown, ≤ 1 Flat, ≤ 2 FortyFiveUp,
  ≤ 3.5 SingleUp, else DoubleUp).

Pure: no I/O. Secrets: the API secret's SHA-1 (hex) is what clients send; the server
keeps only `lookup_key(sha1)`, a SHA-256 of it, so neither the secret nor the value
that authenticates is stored, and an index lookup leaks nothing usable by timing.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from openrecord.care.glucose.readings import (
    Limit,
    Reading,
    datetime_to_us,
    mmoll_to_mgdl,
    us_to_datetime,
)

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_WINDOW_US",
    "DEXCOM_HIGH_MGDL",
    "DEXCOM_LOW_MGDL",
    "MAX_COUNT",
    "MAX_SGV_MGDL",
    "METER_CODE",
    "NIGHTSCOUT_HIGH_SGV",
    "NIGHTSCOUT_LOW_SGV",
    "EntriesQuery",
    "EntryOutcome",
    "EntryProblem",
    "NightscoutError",
    "ParsedEntries",
    "classify_entry",
    "direction",
    "entry_id",
    "lookup_key",
    "meter_observation",
    "meter_observation_id",
    "new_secret",
    "parse_entries",
    "parse_entries_query",
    "reading_entry",
    "secret_sha1",
]

NIGHTSCOUT_LOW_SGV = 39
"""Dexcom's "LOW" as uploaded to Nightscout; stored as 40 mg/dL, flagged LOW."""
NIGHTSCOUT_HIGH_SGV = 401
"""Dexcom's "HIGH" as uploaded to Nightscout; stored as 400 mg/dL, flagged HIGH."""
DEXCOM_LOW_MGDL = 40.0
DEXCOM_HIGH_MGDL = 400.0
MAX_SGV_MGDL = 500.0
"""The top of any CGM's measuring range (FreeStyle Libre outside the US: 40-500 mg/dL)."""
METER_CODE = "41653-7"
"""LOINC Glucose [Mass/volume] in Capillary blood by Glucometer: Nightscout's `mbg`."""
DEFAULT_COUNT = 10
MAX_COUNT = 1_000_000
DEFAULT_WINDOW_US = 4 * 86_400_000_000
"""Nightscout's query window when no date is given (query.js: deltaAgo = 2 * TWO_DAYS)."""

_MIN_DATE_MS = 946_684_800_000  # 2000-01-01: an earlier `date` is seconds, not ms, or junk
_MAX_DATE_MS = 4_102_444_800_000  # 2100-01-01
_LOW_WORDS = frozenset({"low", "lo"})
_HIGH_WORDS = frozenset({"high", "hi"})
_MMOL_UNITS = frozenset({"mmol", "mmol/l", "mmoll"})
_MGDL_UNITS = frozenset({"mg/dl", "mgdl", "mg"})
_NOT_STORED = {
    "cal": "calibration entries (slope/intercept) are not stored",
    "rawbg": "raw sensor entries are not stored",
    "etc": "entries of type 'etc' are not stored",
}
_ID_NAMESPACE = uuid.UUID("0b6c2f5e-3f5d-4d8e-9b1a-7c2e4f6a8d10")
_FIND = re.compile(r"^find\[([A-Za-z_]+)\](?:\[(\$[a-z]+)\])?$")
_ARROWS = (
    (-3.5, "DoubleDown"),
    (-2.0, "SingleDown"),
    (-1.0, "FortyFiveDown"),
    (1.0, "Flat"),
    (2.0, "FortyFiveUp"),
    (3.5, "SingleUp"),
)
_MAX_GAP_US = 15 * 60_000_000


class NightscoutError(ValueError):
    """A request Nightscout would refuse: the message says which entry or parameter."""


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """Why entry `index` of an upload cannot be taken."""

    index: int
    message: str

    def __str__(self) -> str:
        return f"entry {self.index}: {self.message}"


@dataclass(slots=True)
class ParsedEntries:
    """An upload sorted out: sensor readings, meter readings, what is not stored and why,
    and what is malformed. Readings are unique per instant (the last one wins)."""

    sgv: list[Reading] = field(default_factory=list)
    mbg: list[Reading] = field(default_factory=list)
    ignored: list[EntryProblem] = field(default_factory=list)
    invalid: list[EntryProblem] = field(default_factory=list)
    duplicates: int = 0


def secret_sha1(secret: str) -> str:
    """What Nightscout clients send as `api-secret`: the secret's SHA-1, lower-case hex."""
    return hashlib.sha1(secret.encode()).hexdigest()


def lookup_key(sha1_hex: str) -> str:
    """The stored form of a presented SHA-1 (SHA-256 of its lower-case hex)."""
    return hashlib.sha256(sha1_hex.strip().lower().encode()).hexdigest()


def new_secret() -> str:
    """A random API secret (32 URL-safe characters, 192 bits; Nightscout wants ≥ 12)."""
    return secrets.token_urlsafe(24)


def _shown(value: Any) -> str:
    """A value quoted in a message, cut short (messages echo client input)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _entry_time(entry: dict[str, Any]) -> int | str:
    """UTC µs of an entry (`date` ms, else `dateString` with an offset), or why not."""
    date = entry.get("date")
    if date is not None:
        ms = _number(date)
        if ms is None:
            return f"date {_shown(date)} is not a number of milliseconds since 1970"
        if not _MIN_DATE_MS <= ms < _MAX_DATE_MS:
            return f"date {_shown(date)} is not milliseconds since 1970 between 2000 and 2100"
        return round(ms * 1000)
    stamp = entry.get("dateString")
    if not isinstance(stamp, str):
        return "no date (epoch milliseconds) or dateString"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return f"dateString {_shown(stamp)} is not ISO 8601"
    if moment.tzinfo is None:
        return f"dateString {_shown(stamp)} has no UTC offset and there is no date"
    time_us = datetime_to_us(moment)
    if not _MIN_DATE_MS * 1000 <= time_us < _MAX_DATE_MS * 1000:
        return f"dateString {_shown(stamp)} is not between 2000 and 2100"
    return time_us


def _factor(entry: dict[str, Any]) -> float | str:
    units = entry.get("units")
    if units is None:
        return 1.0
    word = str(units).strip().lower()
    if word in _MMOL_UNITS:
        return mmoll_to_mgdl(1.0)
    if word in _MGDL_UNITS:
        return 1.0
    return f"units {_shown(units)} is neither mg/dl nor mmol"


def _sgv(entry: dict[str, Any], factor: float) -> Reading | str | None:
    """The sensor reading's (mg/dL, limit) at time 0, an error, or None: a status code."""
    raw = entry.get("sgv")
    if isinstance(raw, str) and raw.strip().lower() in _LOW_WORDS:
        return Reading(0, DEXCOM_LOW_MGDL, Limit.LOW)
    if isinstance(raw, str) and raw.strip().lower() in _HIGH_WORDS:
        return Reading(0, DEXCOM_HIGH_MGDL, Limit.HIGH)
    value = _number(raw)
    if value is None or value < 0:
        return f"sgv {_shown(raw)} is not a glucose value (a number in mg/dL, or LOW/HIGH)"
    mg_dl = value * factor
    if factor == 1.0 and mg_dl < NIGHTSCOUT_LOW_SGV:
        return None
    if factor != 1.0 and mg_dl < DEXCOM_LOW_MGDL - 1:
        return Reading(0, DEXCOM_LOW_MGDL, Limit.LOW)
    if factor == 1.0 and mg_dl == NIGHTSCOUT_LOW_SGV:
        return Reading(0, DEXCOM_LOW_MGDL, Limit.LOW)
    if factor == 1.0 and mg_dl == NIGHTSCOUT_HIGH_SGV:
        return Reading(0, DEXCOM_HIGH_MGDL, Limit.HIGH)
    if mg_dl > MAX_SGV_MGDL:
        return (
            f"sgv {_shown(raw)} is above any CGM's range (40-500 mg/dL); is it in the right unit?"
        )
    return Reading(0, mg_dl)


def _mbg(entry: dict[str, Any], factor: float) -> Reading | str:
    raw = entry.get("mbg")
    value = _number(raw)
    if value is None or value <= 0:
        return f"mbg {_shown(raw)} is not a glucose value (a number in mg/dL)"
    mg_dl = value * factor
    if not 10 <= mg_dl <= 1000:
        return f"mbg {_shown(raw)} is outside any meter's range; is it in the right unit?"
    return Reading(0, mg_dl)


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    """What one entry is: `sgv`/`mbg` with its reading, `ignored` or `invalid` with why."""

    kind: str
    reading: Reading | None = None
    message: str = ""


def classify_entry(entry: Any) -> EntryOutcome:
    """One uploaded entry → a sensor or meter reading, or why it is not stored."""
    if not isinstance(entry, dict):
        return EntryOutcome("invalid", message="not a JSON object")
    kind = entry.get("type", "sgv" if "sgv" in entry else None)
    if not isinstance(kind, str):
        return EntryOutcome("invalid", message="type must be a string such as 'sgv'")
    if kind not in ("sgv", "mbg"):
        reason = _NOT_STORED.get(kind, f"entries of type {_shown(kind)} are not stored")
        return EntryOutcome("ignored", message=reason)
    time_us = _entry_time(entry)
    factor = _factor(entry)
    if isinstance(time_us, str):
        return EntryOutcome("invalid", message=time_us)
    if isinstance(factor, str):
        return EntryOutcome("invalid", message=factor)
    value = _sgv(entry, factor) if kind == "sgv" else _mbg(entry, factor)
    if isinstance(value, str):
        return EntryOutcome("invalid", message=value)
    if value is None:
        code = entry.get("sgv")
        reason = f"sgv {_shown(code)} is a Dexcom status code (no glucose value), not stored"
        return EntryOutcome("ignored", message=reason)
    return EntryOutcome(kind, Reading(time_us, value.mg_dl, value.limit))


def parse_entries(body: Any) -> ParsedEntries:
    """Sort an upload body (array or single object) into readings, ignored and invalid."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        raise NightscoutError("the body must be a JSON array of entries or one entry object")
    out = ParsedEntries()
    found: dict[str, dict[int, Reading]] = {"sgv": {}, "mbg": {}}
    for index, entry in enumerate(body):
        outcome = classify_entry(entry)
        if outcome.reading is None:
            into = out.invalid if outcome.kind == "invalid" else out.ignored
            into.append(EntryProblem(index, outcome.message))
            continue
        readings = found[outcome.kind]
        if outcome.reading.time_us in readings:
            out.duplicates += 1
        readings[outcome.reading.time_us] = outcome.reading
    out.sgv = [found["sgv"][t] for t in sorted(found["sgv"])]
    out.mbg = [found["mbg"][t] for t in sorted(found["mbg"])]
    return out


# -- queries ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntriesQuery:
    """A GET's filters: time in [start_us, end_us), sgv in [sgv_low, sgv_high], newest
    `count` first, of `type` (None: any)."""

    start_us: int
    end_us: int
    count: int = DEFAULT_COUNT
    type: str | None = None
    sgv_low: float = -math.inf
    sgv_high: float = math.inf


def _ms_bound(text: str, name: str) -> int:
    value = _number(text)
    if value is not None and _MIN_DATE_MS <= value < _MAX_DATE_MS:
        return round(value * 1000)
    raise NightscoutError(f"{name} must be milliseconds since 1970, not {_shown(text)}")


def _iso_bound(text: str, name: str) -> int:
    text = text.strip().replace(" ", "+")  # some clients do not escape the offset's "+"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise NightscoutError(
            f"{name} must be an ISO 8601 date or time, not {_shown(text)}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime_to_us(moment)


def parse_entries_query(
    params: list[tuple[str, str]], now_us: int, *, model: str | None = None
) -> EntriesQuery:
    """The filters of `GET /entries[/model].json` (see the module docstring);
    `NightscoutError` for what this server cannot answer faithfully."""
    start, end = -(2**62), 2**62
    dated = False
    count = DEFAULT_COUNT
    kind = model
    sgv_low, sgv_high = -math.inf, math.inf
    for name, value in params:
        if name == "count":
            number = _number(value)
            if value.strip().lower() in ("inf", "infinity"):
                number = MAX_COUNT
            if number is None or number != int(number) or number < 1:
                raise NightscoutError(f"count must be a positive whole number, not {_shown(value)}")
            count = int(min(number, MAX_COUNT))
            continue
        if name in ("token", "secret", "_", "now"):
            continue
        found = _FIND.match(name)
        if found is None:
            continue  # Nightscout ignores parameters it does not know
        key, op = found.group(1), found.group(2)
        if key == "type" and op is None:
            kind = value
            continue
        if key not in ("date", "dateString", "sgv") or op not in (
            None,
            "$gte",
            "$gt",
            "$lte",
            "$lt",
            "$eq",
        ):
            raise NightscoutError(f"unsupported filter {name}")
        if key == "sgv":
            level = _number(value)
            if level is None:
                raise NightscoutError(f"{name} must be a number (mg/dL), not {_shown(value)}")
            if op in ("$gte", "$gt", "$eq", None):
                sgv_low = max(sgv_low, level + (1e-9 if op == "$gt" else 0))
            if op in ("$lte", "$lt", "$eq", None):
                sgv_high = min(sgv_high, level - (1e-9 if op == "$lt" else 0))
            continue
        dated = True
        at = _ms_bound(value, name) if key == "date" else _iso_bound(value, name)
        if op in ("$gte", "$eq", None):
            start = max(start, at)
        if op == "$gt":
            start = max(start, at + 1)
        if op in ("$lte", "$eq", None):
            end = min(end, at + 1)
        if op == "$lt":
            end = min(end, at)
    if not dated:
        start, end = now_us - DEFAULT_WINDOW_US, 2**62
    return EntriesQuery(start, end, count, kind, sgv_low, sgv_high)


# -- answers ---------------------------------------------------------------------------


def entry_id(patient: str, time_us: int) -> str:
    """A stable 24-hex-digit `_id` (Mongo ObjectId shape) of a patient's entry."""
    return hashlib.sha1(f"{patient}|{time_us}".encode()).hexdigest()[:24]


def direction(reading: Reading, previous: Reading | None) -> str:
    """xDrip+'s trend arrow from the slope to the previous reading (see module doc)."""
    if previous is None or not 0 < reading.time_us - previous.time_us <= _MAX_GAP_US:
        return "NONE"
    if reading.limit is not None or previous.limit is not None:
        return "NOT COMPUTABLE"
    minutes = (reading.time_us - previous.time_us) / 60_000_000
    slope = (reading.mg_dl - previous.mg_dl) / minutes
    for ceiling, arrow in _ARROWS:
        if slope <= ceiling:
            return arrow
    return "DoubleUp"


def _iso_ms(time_us: int) -> str:
    moment = us_to_datetime(time_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def reading_entry(reading: Reading, previous: Reading | None, patient: str) -> dict[str, Any]:
    """A stored sensor reading as a Nightscout `sgv` entry (limits as 39 / 401)."""
    if reading.limit is Limit.LOW:
        sgv = NIGHTSCOUT_LOW_SGV
    elif reading.limit is Limit.HIGH:
        sgv = NIGHTSCOUT_HIGH_SGV
    else:
        sgv = round(reading.mg_dl)
    stamp = _iso_ms(reading.time_us)
    return {
        "_id": entry_id(patient, reading.time_us),
        "type": "sgv",
        "sgv": sgv,
        "date": reading.time_us // 1000,
        "dateString": stamp,
        "sysTime": stamp,
        "utcOffset": 0,
        "direction": direction(reading, previous),
        "device": "openrecord",
    }


def meter_observation_id(patient: str, time_us: int) -> str:
    """A stable Observation id for a patient's meter reading at an instant."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"mbg|{patient}|{time_us}"))


def meter_observation(reading: Reading, patient: str) -> dict[str, Any]:
    """A Nightscout `mbg` (finger-stick meter glucose) as a capillary glucose Observation."""
    return {
        "resourceType": "Observation",
        "id": meter_observation_id(patient, reading.time_us),
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": METER_CODE,
                    "display": "Glucose [Mass/volume] in Capillary blood by Glucometer",
                }
            ]
        },
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": _iso_ms(reading.time_us),
        "valueQuantity": {
            "value": round(reading.mg_dl, 3),
            "unit": "mg/dl",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }
