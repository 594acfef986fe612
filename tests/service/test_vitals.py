"""Writing vital signs through the service: the stored Observations conform to their US
Core profiles, the BMI is weight / height², and the summaries read them back — on each
backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from openrecord.care.vitals.blood_pressure import BpReading
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.profiles import validate_against
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.service.vitals import (
    bp_summary,
    record_blood_pressure,
    record_height,
    record_weight,
    weight_summary,
)
from openrecord.store import open_store
from tests.databases import backends, fresh_database

OPEN = SecurityContext.open()
WHEN = datetime(2024, 6, 1, 8, tzinfo=UTC)
US = "http://hl7.org/fhir/us/core/StructureDefinition/"


@pytest.fixture(params=backends())
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordService]:
    with fresh_database(request.param, tmp_path) as database:
        store = open_store(database)
        try:
            service = RecordService(store)
            service.update(OPEN, "Patient", "v", {"resourceType": "Patient", "id": "v"})
            yield service
        finally:
            store.close()


def test_written_vitals_conform_and_read_back(records: RecordService) -> None:
    written = record_weight(records, OPEN, "v", WHEN, 80.0, height_m=1.75)
    written += [record_height(records, OPEN, "v", WHEN + timedelta(days=1), 176)]
    written += record_blood_pressure(records, OPEN, "v", [BpReading(WHEN, 121, 79)])
    bodies = [orjson.loads(w.version.data or b"{}") for w in written]
    profiles = [b["meta"]["profile"][0] for b in bodies]
    assert profiles == [
        US + "us-core-body-weight",
        US + "us-core-body-height",
        US + "us-core-bmi",
        US + "us-core-body-height",
        US + "us-core-blood-pressure",
    ]
    for body, profile in zip(bodies, profiles, strict=True):
        assert [i for i in validate_against(body, profile) if i.severity == "error"] == []
    assert bodies[2]["valueQuantity"]["value"] == round(80 / 1.75**2, 2)

    start = int(WHEN.timestamp() * 1e6)
    end = start + 7 * 86_400_000_000
    weights = weight_summary(records, OPEN, "v", start, end)
    assert weights.readings == 1 and weights.height is not None
    assert weights.height.m == pytest.approx(1.76)  # the latest height
    assert weights.bmi == pytest.approx(80 / 1.76**2)
    pressure = bp_summary(records, OPEN, "v", start, end)
    assert pressure.average is not None and pressure.average.systolic == 121


def test_implausible_values_are_refused(records: RecordService) -> None:
    with pytest.raises(FHIRError) as caught:
        record_weight(records, OPEN, "v", WHEN, -1)
    assert caught.value.status == 400
    with pytest.raises(FHIRError) as missing:
        record_height(records, OPEN, "nobody", WHEN, 170)
    assert missing.value.status == 404
