"""The audit trail seen over HTTP: every read answered by the server leaves its event
before the response, also when many arrive at once (reads by id are answered on the
event loop and their events committed by the process's writer thread), and a read
whose event cannot be recorded is answered 500 without the resource."""

from __future__ import annotations

import threading

import httpx
import orjson

from openrecord.audit_cli import verify_chain
from openrecord.store import open_store
from tests.server.conftest import Server


def _chained(database: str) -> list[dict[str, object]]:
    """Every event of the audit chain, in order (read as the operator)."""
    store = open_store(database)
    try:
        rows = store.query("SELECT event FROM audit_chain ORDER BY seq")
        return [orjson.loads(bytes(event)) for (event,) in rows if event is not None]
    finally:
        store.close()


def _read_events_of(events: list[dict[str, object]], patient: str) -> int:
    return sum(
        1
        for e in events
        if e["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
        and {"reference": f"Patient/{patient}"} in [x.get("what") for x in e.get("entity", [])]  # type: ignore[union-attr]
    )


def test_concurrent_reads_each_leave_one_event_before_answering(server: Server) -> None:
    patients = [f"audit-http-{k}" for k in range(8)]
    with httpx.Client(base_url=server.base, timeout=60) as c:
        for p in patients:
            c.put(f"/Patient/{p}", json={"resourceType": "Patient", "id": p}).raise_for_status()
    errors: list[BaseException] = []

    def work(patient: str) -> None:
        try:
            with httpx.Client(base_url=server.base, timeout=60) as c:
                for i in range(1, 16):
                    assert c.get(f"/Patient/{patient}").status_code == 200
                    # answered only once its event was committed
                    assert _read_events_of(_chained(server.database), patient) == i
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in patients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    store = open_store(server.database)
    try:
        assert verify_chain(store).ok
    finally:
        store.close()


def test_a_read_that_cannot_be_audited_is_refused(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        c.put("/Patient/audit-http-x", json={"resourceType": "Patient", "id": "audit-http-x"})
        store = open_store(server.database)
        try:
            with store.write() as tx:
                tx.execute("ALTER TABLE audit_chain RENAME TO audit_chain_away")
            try:
                refused = c.get("/Patient/audit-http-x")
            finally:
                with store.write() as tx:
                    tx.execute("ALTER TABLE audit_chain_away RENAME TO audit_chain")
        finally:
            store.close()
        assert refused.status_code == 500
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "audit" in outcome["issue"][0]["diagnostics"]
        assert "audit-http-x" not in refused.text  # nothing of the record
        assert c.get("/Patient/audit-http-x").status_code == 200
