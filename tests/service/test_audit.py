"""The audit trail (service/audit.py) through RecordService on a real store: one R4
AuditEvent per interaction and per refusal, in the write's own transaction, a hash
chain that `openrecord audit verify` checks, and patients listing their own events.

The data is test_access.py's: Alpha (`pat-a`) and Bravo (`pat-b`), their Encounters,
Observations and Conditions, and Practitioner `doc`. Expected AuditEvent contents
follow from the R4 AuditEvent definition and the code systems named in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from openrecord.audit_cli import verify_chain
from openrecord.cli import main
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.validation import validate_resource
from openrecord.service.audit import record_auth_event
from openrecord.service.audit_chain import catch_up
from openrecord.service.bundles import BundleProcessor
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store import open_store
from openrecord.store.base import Store
from tests.service.test_access import _observation, _resources

OPEN = SecurityContext.open()
ALPHA = SecurityContext(
    user="Patient/pat-a",
    client="app-1",
    patient="pat-a",
    scopes=frozenset({"launch/patient", "patient/*.rs"}),
    purpose="PATRQT",
)
BRAVO = SecurityContext.of("patient/*.rs", patient="pat-b", user="Patient/pat-b")
RESTFUL = "http://hl7.org/fhir/restful-interaction"


@pytest.fixture
def records(store_url: str) -> Iterator[RecordService]:
    store = open_store(store_url)
    try:
        service = RecordService(store)
        for resource in _resources():
            service.update(OPEN, resource["resourceType"], resource["id"], resource)
        yield service
    finally:
        store.close()


def _chain(store: Store) -> list[tuple[int, str, str]]:
    rows = store.query("SELECT seq, event_id, hash FROM audit_chain ORDER BY seq")
    return [(int(s), str(e), str(h)) for s, e, h in rows]


def _last(store: Store, n: int = 1) -> list[dict[str, Any]]:
    """The last `n` AuditEvents appended, oldest first (as stored resources)."""
    catch_up(store)
    events = []
    for _, event_id, _ in _chain(store)[-n:]:
        found = store.read("AuditEvent", event_id)
        assert found is not None and found.data is not None
        events.append(orjson.loads(found.data))
    return events


def _refs(event: dict[str, Any], role: str | None = None) -> set[str]:
    return {
        e["what"]["reference"]
        for e in event.get("entity", [])
        if "what" in e and (role is None or e["role"]["code"] == role)
    }


def _query(event: dict[str, Any]) -> str:
    [query] = [e["query"] for e in event["entity"] if "query" in e]
    return base64.b64decode(query).decode()


def _status(call: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(FHIRError) as err:
        call(*args, **kwargs)
    return err.value.status


# -- what an event says ----------------------------------------------------------------


def test_read_is_one_valid_event_naming_who_what_and_whose(records: RecordService) -> None:
    before = len(_chain(records.store))
    records.read(ALPHA, "Observation", "obs-a-lab")
    assert len(_chain(records.store)) == before + 1
    [event] = _last(records.store)
    issues = validate_resource(event, expected_type="AuditEvent")
    assert not [i for i in issues if i.severity in ("error", "fatal")]
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["subtype"] == [{"system": RESTFUL, "code": "read"}]
    assert event["type"]["code"] == "rest"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "PATRQT"
    user, app = event["agent"]
    assert user["who"] == {"reference": "Patient/pat-a"} and user["requestor"] is True
    assert app["who"]["identifier"] == {"system": "urn:openrecord:client", "value": "app-1"}
    assert event["source"]["type"][0]["code"] == "4"  # application server
    assert _refs(event, "4") == {"Observation/obs-a-lab/_history/1"}
    assert _refs(event, "1") == {"Patient/pat-a"}


def test_search_records_the_query_and_the_patients_found(records: RecordService) -> None:
    params = [("category", "laboratory")]
    records.search(OPEN, "Observation", params)
    [event] = _last(records.store)
    assert event["subtype"][0]["code"] == "search-type"
    assert event["action"] == "E"
    assert _query(event) == "Observation?category=laboratory"
    assert _refs(event, "1") == {"Patient/pat-a", "Patient/pat-b"}
    assert event["agent"][0]["name"].startswith("operator")


def test_write_is_audited_in_its_own_transaction(records: RecordService) -> None:
    writer = SecurityContext.of("patient/*.cruds", patient="pat-a", user="Patient/pat-a")
    new = _observation("x", "pat-a", "vital-signs", "enc-a")
    del new["id"]
    created = records.create(writer, "Observation", new)
    [event] = _last(records.store)
    assert event["action"] == "C" and event["outcome"] == "0"
    assert _refs(event, "4") == {f"Observation/{created.version.id}/_history/1"}
    assert _refs(event, "1") == {"Patient/pat-a"}
    records.delete(writer, "Observation", created.version.id)
    [deleted] = _last(records.store)
    assert deleted["action"] == "D"
    assert _refs(deleted, "4") == {f"Observation/{created.version.id}/_history/2"}
    assert _refs(deleted, "1") == {"Patient/pat-a"}  # whose data the deleted version was


def test_invalid_write_is_audited_as_a_failure_and_writes_nothing(
    records: RecordService,
) -> None:
    bad = _observation("y", "pat-a", "vital-signs", "enc-a")
    bad["status"] = "not-a-status"
    assert _status(records.update, OPEN, "Observation", "y", bad) == 422
    [event] = _last(records.store)
    assert event["outcome"] == "4" and event["action"] == "U"
    assert records.store.read("Observation", "y") is None


def test_transaction_bundle_is_one_event_listing_every_write(records: RecordService) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                "resource": _observation("t1", "pat-a", "vital-signs", "enc-a"),
                "request": {"method": "PUT", "url": "Observation/t1"},
            },
            {
                "resource": _observation("t2", "pat-b", "vital-signs", "enc-b"),
                "request": {"method": "PUT", "url": "Observation/t2"},
            },
        ],
    }
    before = len(_chain(records.store))
    BundleProcessor(records).process(OPEN, bundle)
    assert len(_chain(records.store)) == before + 1
    [event] = _last(records.store)
    assert event["subtype"][0]["code"] == "transaction"
    assert _refs(event, "4") == {"Observation/t1/_history/1", "Observation/t2/_history/1"}
    assert _refs(event, "1") == {"Patient/pat-a", "Patient/pat-b"}


# -- refusals ------------------------------------------------------------------------


def test_refusals_are_audited_as_serious_failures(records: RecordService) -> None:
    assert _status(records.read, ALPHA, "Observation", "obs-b-lab") == 404  # by compartment
    [hidden] = _last(records.store)
    assert hidden["outcome"] == "8"
    # Bravo can see who tried; Alpha, for whom the app acted, sees it too
    assert _refs(hidden, "1") == {"Patient/pat-a", "Patient/pat-b"}
    for_alpha = orjson.loads(records.read(ALPHA, "AuditEvent", hidden["id"]).data or b"{}")
    assert _refs(for_alpha) == {"Patient/pat-a"}  # not which of Bravo's resources
    assert _status(records.search, ALPHA, "Practitioner", []) == 403
    [forbidden] = _last(records.store)
    assert forbidden["outcome"] == "8" and "outcomeDesc" in forbidden
    assert _status(records.read, ALPHA, "Observation", "no-such") == 404
    [missing] = _last(records.store)
    assert missing["outcome"] == "4"  # plainly not found: a minor failure


def test_batch_patch_entries_are_checked_and_audited(records: RecordService) -> None:
    writer = SecurityContext.of("patient/*.cruds", patient="pat-a")
    patch = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Observation.status"},
                    {"name": "value", "valueCode": "amended"},
                ],
            }
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patch, "request": {"method": "PATCH", "url": "Observation/obs-b-lab"}},
            {"resource": patch, "request": {"method": "PATCH", "url": "Observation/obs-a-lab"}},
        ],
    }
    out = BundleProcessor(records).process(writer, bundle)
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["404", "200"]
    stored = records.store.read("Observation", "obs-b-lab")
    assert stored is not None and stored.data is not None
    assert orjson.loads(stored.data)["status"] == "final"  # Bravo's record untouched
    refused, done = _last(records.store, 2)
    assert refused["outcome"] == "8" and done["outcome"] == "0"


def test_audit_events_are_read_only(records: RecordService) -> None:
    records.read(OPEN, "Patient", "pat-a")
    [event] = _last(records.store)
    for ctx in (OPEN, SecurityContext.of("system/*.cruds")):
        assert _status(records.update, ctx, "AuditEvent", event["id"], event) == 405
        assert _status(records.delete, ctx, "AuditEvent", event["id"]) == 405
        del event["id"]
        assert _status(records.create, ctx, "AuditEvent", event) == 405
        event["id"] = _last(records.store)[0]["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": event, "request": {"method": "PUT", "url": f"AuditEvent/{event['id']}"}}
        ],
    }
    assert _status(BundleProcessor(records).process, OPEN, bundle) == 405
    assert verify_chain(records.store).ok


# -- the patient's view ----------------------------------------------------------------


def test_patient_lists_who_accessed_their_record(records: RecordService) -> None:
    records.read(OPEN, "Observation", "obs-a-lab")  # an operator reads Alpha's data
    records.read(BRAVO, "Patient", "pat-b")
    record_auth_event(
        records.store,
        kind="login",
        user="Patient/pat-a",
        client=None,
        patient="pat-a",
        outcome=0,
        detail=None,
        source_ip="192.0.2.7",
    )
    found = records.search(ALPHA, "AuditEvent", [("patient", "me"), ("_count", "100")])
    events = [orjson.loads(r.data or b"{}") for r in found.resources]
    assert events and all("Patient/pat-a" in _refs(e) for e in events)
    assert not any("Patient/pat-b" in _refs(e, "1") for e in events)
    assert any(
        e["agent"][0].get("name", "").startswith("operator") and e["action"] == "R" for e in events
    )
    [login] = [e for e in events if e["type"]["code"] == "110114"]
    assert login["subtype"][0]["code"] == "110122"  # DICOM Login
    assert login["agent"][0]["network"] == {"address": "192.0.2.7", "type": "2"}
    # the listing is audited in turn, with Alpha as the patient; it does not recurse
    [listing] = _last(records.store)
    assert _query(listing) == "AuditEvent?patient=me&_count=100"  # as asked
    assert _refs(listing, "1") == {"Patient/pat-a"}
    assert _status(records.read, ALPHA, "AuditEvent", _bravo_event(records)) == 404
    assert _status(records.search, OPEN, "AuditEvent", [("patient", "me")]) == 400


def _bravo_event(records: RecordService) -> str:
    found = records.search(OPEN, "AuditEvent", [("patient", "pat-b"), ("_count", "1")])
    return found.resources[0].id


def test_searches_of_every_type_leave_the_audit_trail_out(records: RecordService) -> None:
    found = records.search(OPEN, None, [("_count", "1000")])
    assert found.resources and all(r.type != "AuditEvent" for r in found.resources)
    everything = records.search(OPEN, None, [], compartment=("Patient", "pat-a"))
    assert all(r.type != "AuditEvent" for r in everything.resources)
    named = records.search(OPEN, None, [("_type", "AuditEvent,Patient"), ("_count", "1000")])
    assert {r.type for r in named.resources} == {"AuditEvent", "Patient"}


# -- no unaudited access -----------------------------------------------------------------


def _rename(store: Store, old: str, new: str) -> None:
    with store.write() as tx:
        tx.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_an_audit_failure_fails_the_request(records: RecordService) -> None:
    store = records.store
    _rename(store, "audit_chain", "audit_chain_away")
    try:
        assert _status(records.read, OPEN, "Patient", "pat-a") == 500
        new = _observation("z", "pat-a", "vital-signs", "enc-a")
        assert _status(records.update, OPEN, "Observation", "z", new) == 500
    finally:
        _rename(store, "audit_chain_away", "audit_chain")
    assert store.read("Observation", "z") is None  # the write rolled back with its audit
    assert verify_chain(store).ok


def test_concurrent_appends_never_fork_the_chain(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]  # like worker processes
    try:
        services = [RecordService(s) for s in stores]
        services[0].update(OPEN, "Patient", "p", {"resourceType": "Patient", "id": "p"})
        errors: list[BaseException] = []

        def work(service: RecordService) -> None:
            own = f"p-{id(service)}"  # a resource each: the chain is what they share
            try:
                for i in range(10):
                    service.read(OPEN, "Patient", "p")
                    body = {"resourceType": "Patient", "id": own, "active": i % 2 == 0}
                    service.update(OPEN, "Patient", own, body)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        chain = _chain(stores[0])
        assert [seq for seq, _, _ in chain] == list(range(1, 82))
        report = verify_chain(stores[0])
        assert report.ok and report.count == 81
    finally:
        for s in stores:
            s.close()


def test_concurrent_reads_in_one_process_each_get_their_own_event(store_url: str) -> None:
    """Reads on many threads of one process share commits (group commit): every read
    still has exactly one event, chained without gaps, and returns only once its own
    event is stored."""
    store = open_store(store_url)
    try:
        service = RecordService(store)
        for k in range(8):
            service.update(OPEN, "Patient", f"p-{k}", {"resourceType": "Patient", "id": f"p-{k}"})
        errors: list[BaseException] = []

        def events_of(patient: str) -> int:
            rows = store.query("SELECT event FROM audit_chain")
            entity = f'"reference":"Patient/{patient}"'.encode()  # the patient entity
            return sum(1 for (event,) in rows if event is not None and entity in bytes(event))

        def work(patient: str) -> None:
            try:
                written = events_of(patient)  # its update's
                for i in range(1, 26):
                    service.read(OPEN, "Patient", patient)
                    assert events_of(patient) == written + i  # this read's is stored
            except BaseException as exc:  # reported below
                errors.append(exc)

        before = len(_chain(store))
        threads = [threading.Thread(target=work, args=(f"p-{k}",)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        chain = _chain(store)
        assert [seq for seq, _, _ in chain] == list(range(1, before + 201))
        assert len({event_id for _, event_id, _ in chain}) == len(chain)
        assert verify_chain(store).ok
    finally:
        store.close()


# -- tampering -------------------------------------------------------------------------


def _tamper(store_url: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run SQL on the database directly, past the append-only triggers (as a database
    owner could)."""
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        with conn:
            conn.execute("DROP TRIGGER IF EXISTS audit_chain_no_update")
            conn.execute("DROP TRIGGER IF EXISTS audit_chain_no_delete")
            for sql, params in statements:
                conn.execute(sql, params)
        conn.close()
        return
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as pg:
        pg.execute("SET session_replication_role = replica")  # triggers off (superuser)
        for sql, params in statements:
            pg.execute(sql.replace("?", "%s"), params)


def _trail(records: RecordService) -> list[tuple[int, str, str]]:
    for id in ("pat-a", "pat-b", "obs-a-lab", "obs-b-lab"):
        kind = "Patient" if id.startswith("pat") else "Observation"
        records.read(OPEN, kind, id)
    chain = _chain(records.store)
    assert len(chain) >= 10
    assert catch_up(records.store) > 0  # the events were stored as resources from it
    return chain


def _verify(store_url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--database", store_url, *extra])
    return code, capsys.readouterr().out


def test_verify_accepts_an_intact_chain_and_checks_an_anchor(
    records: RecordService,
    store_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    chain = _trail(records)
    code, out = _verify(store_url, capsys)
    assert code == 0 and "chain intact" in out
    seq, _, digest = chain[-1]
    assert f"head {seq}:{digest}" in out
    # the head is the SHA-256 chain over the stored events, computed here independently
    previous = "0" * 64
    for _, event_id, stored in chain:
        found = records.store.read("AuditEvent", event_id)
        assert found is not None and found.data is not None
        body = orjson.dumps(orjson.loads(found.data), option=orjson.OPT_SORT_KEYS)
        previous = hashlib.sha256(previous.encode() + body).hexdigest()
        assert previous == stored
    assert _verify(store_url, capsys, "--anchor", f"{seq}:{digest}")[0] == 0
    done = subprocess.run(  # the installed command, as an operator runs it
        [sys.executable, "-m", "openrecord", "audit", "verify", "--database", store_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "chain intact" in done.stdout, done.stderr
    exported = tmp_path / "audit.ndjson"
    assert main(["audit", "export", "--database", store_url, "--output", str(exported)]) == 0
    lines = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    assert [(x["seq"], x["event"]["id"], x["hash"]) for x in lines] == _chain(records.store)
    assert _verify(store_url, capsys, "--anchor", f"{seq}:{'0' * 64}")[0] == 1
    assert _verify(store_url, capsys, "--anchor", f"{seq + 50}:{digest}")[0] == 1


def test_verify_detects_a_modified_event(
    records: RecordService, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = _trail(records)
    seq, event_id, _ = chain[4]
    found = records.store.read("AuditEvent", event_id)
    assert found is not None and found.data is not None
    forged = found.data.replace(b'"outcome":"0"', b'"outcome":"4"')
    assert forged != found.data
    _tamper(
        store_url,
        ("UPDATE history SET data = ? WHERE type = 'AuditEvent' AND id = ?", (forged, event_id)),
    )
    code, out = _verify(store_url, capsys)
    assert code == 1 and f"row {seq} " in out and "TAMPERED" in out


def test_verify_detects_a_modified_chain_row(
    records: RecordService, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = _trail(records)
    seq = chain[3][0]
    _tamper(store_url, ("UPDATE audit_chain SET hash = ? WHERE seq = ?", ("f" * 64, seq)))
    code, out = _verify(store_url, capsys)
    assert code == 1 and f"row {seq} " in out


def test_verify_detects_a_deleted_row(
    records: RecordService, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = _trail(records)
    seq = chain[5][0]
    _tamper(store_url, ("DELETE FROM audit_chain WHERE seq = ?", (seq,)))
    code, out = _verify(store_url, capsys)
    assert code == 1 and f"row {seq} is missing" in out


def test_verify_detects_a_deleted_last_row(
    records: RecordService, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = _trail(records)
    seq, event_id, _ = chain[-1]
    _tamper(store_url, ("DELETE FROM audit_chain WHERE seq = ?", (seq,)))
    code, out = _verify(store_url, capsys)
    assert code == 1 and f"AuditEvent/{event_id} is not in the chain" in out


def test_verify_detects_reordered_rows(
    records: RecordService, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = _trail(records)
    (s1, e1, _), (s2, e2, _) = chain[2], chain[3]
    _tamper(
        store_url,
        ("UPDATE audit_chain SET event_id = ? WHERE seq = ?", ("swap", s1)),
        ("UPDATE audit_chain SET event_id = ? WHERE seq = ?", (e1, s2)),
        ("UPDATE audit_chain SET event_id = ? WHERE seq = ?", (e2, s1)),
    )
    code, out = _verify(store_url, capsys)
    assert code == 1 and f"row {s1} " in out


def test_the_database_refuses_updates_and_deletes_of_the_chain(records: RecordService) -> None:
    _trail(records)
    for sql in ("UPDATE audit_chain SET hash = 'x'", "DELETE FROM audit_chain WHERE seq = 1"):
        with pytest.raises(Exception, match="append-only"), records.store.write() as tx:
            tx.execute(sql)
    assert verify_chain(records.store).ok


def test_a_patient_sees_only_their_part_of_an_event_about_several(
    records: RecordService,
) -> None:
    records.search(OPEN, "Observation", [("code", "http://loinc.org|8867-4")])
    [full] = _last(records.store)
    assert _refs(full, "1") == {"Patient/pat-a", "Patient/pat-b"}
    found = records.search(ALPHA, "AuditEvent", [("_id", full["id"])])
    [shown] = [orjson.loads(r.data or b"{}") for r in found.resources]
    assert _refs(shown, "1") == {"Patient/pat-a"}
    assert not [e for e in shown["entity"] if "query" in e]  # the query named others too
    assert {"code": "REDACTED"}.items() <= shown["meta"]["security"][-1].items()
    read = records.read(ALPHA, "AuditEvent", full["id"])
    assert orjson.loads(read.data or b"{}")["entity"] == shown["entity"]
    assert (
        records.read(OPEN, "AuditEvent", full["id"]).data
        == records.store.read("AuditEvent", full["id"]).data
    )  # the stored event is unchanged (the chain still holds)
    assert verify_chain(records.store).ok


def test_a_transaction_over_two_patients_shows_each_their_own_writes(
    records: RecordService,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation(id, patient, "vital-signs", f"enc-{patient[-1]}"),
                "request": {"method": "PUT", "url": f"Observation/{id}"},
            }
            for id, patient in (("ta", "pat-a"), ("tb", "pat-b"))
        ],
    }
    BundleProcessor(records).process(OPEN, bundle)
    [full] = _last(records.store)
    shown = orjson.loads(records.read(BRAVO, "AuditEvent", full["id"]).data or b"{}")
    assert _refs(shown) == {"Observation/tb/_history/1", "Patient/pat-b"}


def test_an_operation_of_several_transactions_audits_each(records: RecordService) -> None:
    before = len(_chain(records.store))
    with records.audit.recording(OPEN, "operation", type="Patient", id="pat-a"):
        for id in ("op1", "op2"):
            records.update(OPEN, "Observation", id, _observation(id, "pat-a", "survey", "enc-a"))
        records.read(OPEN, "Observation", "obs-b-lab")  # read after the writes
    events = _last(records.store, len(_chain(records.store)) - before)
    assert [_refs(e, "4") for e in events] == [
        {"Observation/op1/_history/1"},
        {"Observation/op2/_history/1"},
        {"Observation/obs-b-lab/_history/1"},  # what came after, once
    ]
    assert all(e["subtype"][0]["code"] == "operation" for e in events)


def test_a_patient_cannot_probe_the_redacted_parts_of_events(records: RecordService) -> None:
    records.search(OPEN, "Observation", [("code", "http://loinc.org|8867-4")])  # both patients
    for params in (
        [("patient", "pat-b")],
        [("entity", "Observation/obs-b-lab")],
        [("_content", "obs-b-lab")],
        [("_sort", "entity")],
        [("patient", "me"), ("entity-type", "2")],
    ):
        assert _status(records.search, ALPHA, "AuditEvent", params) == 403, params
    mixed = [("_type", "AuditEvent,Observation"), ("_content", "pat-b")]
    assert _status(records.search, ALPHA, None, mixed) == 403
    found = records.search(
        ALPHA, "AuditEvent", [("patient", "me"), ("outcome", "0"), ("_sort", "-date")]
    )
    assert found.resources
    records.read(OPEN, "Observation", "obs-b-lab")
    operator = records.search(OPEN, "AuditEvent", [("entity", "Observation/obs-b-lab")])
    assert len(operator.resources) == 2  # its write when loaded and this read


def test_auth_events_check_their_outcome_and_me_follows_the_user(
    records: RecordService,
) -> None:
    with pytest.raises(ValueError):
        record_auth_event(
            records.store,
            kind="login",
            user=None,
            client=None,
            patient=None,
            outcome=3,
            detail=None,
            source_ip=None,
        )
    record_auth_event(
        records.store,
        kind="token-refused",
        user=None,
        client="app-9",
        patient=None,
        outcome=8,
        detail="expired token",
        source_ip="198.51.100.4",
    )
    [refused] = _last(records.store)
    assert refused["outcome"] == "8" and refused["outcomeDesc"] == "expired token"
    assert refused["agent"][0]["requestor"] is True  # the app, with no user, asked
    assert refused["agent"][0]["network"]["address"] == "198.51.100.4"
    # a user who is a Patient, without a launch patient: `me` is that patient
    own = SecurityContext(user="Patient/pat-b", scopes=frozenset({"user/AuditEvent.rs"}))
    found = records.search(own, "AuditEvent", [("patient", "me"), ("_count", "200")])
    assert found.resources
    assert all(
        "Patient/pat-b" in _refs(orjson.loads(r.data or b"{}"), "1") for r in found.resources
    )
