"""`openrecord audit verify` and `openrecord audit export`: the audit trail's hash chain.

`verify` walks the chain (service/audit.py) from its first row and reports the first
modified, inserted, reordered or deleted row (exit 1), or the head (seq and hash) when
it holds (exit 0). Record that head somewhere outside the database from time to time
and pass it back as `--anchor SEQ:HASH`: a chain rebuilt or truncated after that point
then fails too. `export` writes every AuditEvent in chain order as NDJSON, each line
with its chain row, for archiving (the database keeps everything: nothing is deleted).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from openrecord.store.base import Store

__all__ = ["ChainReport", "add_audit_parser", "audit_command", "verify_chain"]


def add_audit_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_database: Callable[[argparse.ArgumentParser], None],
) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the hash chain; exit 1 at the first modified or missing row"
    )
    with_database(verify)
    verify.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="a head printed by an earlier verify, kept outside the database: it must still"
        " be in the chain",
    )
    export = audit_sub.add_parser(
        "export", help="write every AuditEvent in chain order as NDJSON (for archiving)"
    )
    with_database(export)
    export.add_argument("--output", default="-", metavar="FILE", help="where to write; - stdout")


def _anchor(text: str | None) -> tuple[int, str] | str | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        return f"--anchor {text!r}: expected SEQ:HASH (a 64-digit hex SHA-256)"
    return int(seq), digest.lower()


def audit_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.cli import redact
    from openrecord.store import open_store

    if args.audit_command == "export":
        return _export(database, args.output)
    anchor = _anchor(args.anchor)
    if isinstance(anchor, str):
        print(f"openrecord: {anchor}", file=sys.stderr)
        return 2
    store = open_store(database)
    try:
        report = verify_chain(store, anchor=anchor)
    finally:
        store.close()
    if not report.ok:
        print(f"audit trail of {redact(database)}: TAMPERED after {report.count:,} good row(s)")
        print(f"  {report.problem}")
        return 1
    head = f"{report.head[0]}:{report.head[1]}" if report.head else "none (empty trail)"
    print(f"audit trail of {redact(database)}: {report.count:,} event(s), chain intact")
    print(f"  head {head}")
    return 0


def _export(database: str, output: str) -> int:
    from openrecord.store import open_store

    store = open_store(database)
    out = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    try:
        after = 0
        while True:
            rows = _chain_rows(store, after)
            if not rows:
                break
            for seq, event_id, digest, data in rows:
                event = data if data is not None else _stored(store, event_id)
                line = {
                    "seq": int(seq),
                    "hash": digest,
                    "event": orjson.Fragment(event) if event else None,
                }
                out.write(orjson.dumps(line) + b"\n")
                after = int(seq)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        store.close()
    return 0


def _chain_rows(store: Store, after: int) -> list[tuple[int, str, str, bytes | None]]:
    """The next 500 chain rows after `after`: seq, event id, hash, event JSON (None for
    rows chained before events were kept in the chain: the resource holds it)."""
    rows = store.query(
        "SELECT seq, event_id, hash, event FROM audit_chain WHERE seq > ? ORDER BY seq LIMIT 500",
        (after,),
    )
    return [(int(s), str(e), str(h), bytes(d) if d is not None else None) for s, e, h, d in rows]


def _stored(store: Store, event_id: str) -> bytes | None:
    """The AuditEvent resource's JSON, if it is stored (and unchanged: version 1)."""
    from openrecord.service.audit import AUDIT_TYPE

    found = store.read(AUDIT_TYPE, event_id)
    return found.data if found is not None and found.version == 1 else None


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    count: int  # chain rows checked
    head: tuple[int, str] | None  # (seq, hash) of the last row
    problem: str | None = None  # the first problem found
    seq: int | None = None  # where


def verify_chain(store: Store, *, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the chain from seq 1: every row follows the previous one without a gap,
    its hash covers the previous hash and its event, the AuditEvent resource stored
    from it is the same event (unchanged, version 1), and every AuditEvent resource
    has a row. `anchor` (seq, hash), recorded earlier outside the database, must still
    be in the chain (a truncated or rebuilt tail)."""
    from openrecord.service.audit import GENESIS, chain_hash
    from openrecord.service.audit_chain import materialized_seq

    stored_up_to = materialized_seq(store)
    previous, expected, count = GENESIS, 1, 0
    head: tuple[int, str] | None = None
    after = 0
    while True:
        rows = _chain_rows(store, after)
        if not rows:
            break
        for seq, event_id, stored_hash, chained in rows:
            if seq != expected:
                return ChainReport(
                    False,
                    count,
                    head,
                    f"row {expected} is missing: the chain jumps from {expected - 1} to {seq}"
                    " (deleted rows)",
                    expected,
                )
            # rows chained before events were kept in the chain: the resource is it
            event = chained if chained is not None else _stored(store, event_id)
            stored_from_row = chained is not None and seq <= stored_up_to
            if event is None or (stored_from_row and _stored(store, event_id) != chained):
                found = store.read("AuditEvent", event_id)
                what = "missing" if found is None or found.data is None else "changed"
                return ChainReport(
                    False, count, head, f"AuditEvent/{event_id} of row {seq} is {what}", seq
                )
            parsed = orjson.loads(event)
            if parsed.get("id") != event_id or chain_hash(previous, parsed) != stored_hash:
                return ChainReport(
                    False,
                    count,
                    head,
                    f"row {seq} (AuditEvent/{event_id}) does not match its hash: the event"
                    " or the row was modified, or rows were reordered or inserted",
                    seq,
                )
            if anchor is not None and anchor[0] == seq and anchor[1] != stored_hash:
                return ChainReport(
                    False, count, head, f"row {seq} differs from the anchor recorded", seq
                )
            previous, expected, count = stored_hash, seq + 1, count + 1
            head = (seq, stored_hash)
            after = seq
    if anchor is not None and (head is None or head[0] < anchor[0]):
        return ChainReport(
            False, count, head, f"the chain ends before the anchor row {anchor[0]}", anchor[0]
        )
    unchained = _unchained_events(store, min(count, stored_up_to))
    if unchained:
        return ChainReport(
            False,
            count,
            head,
            f"AuditEvent/{unchained} is not in the chain (inserted, or its row deleted)",
        )
    return ChainReport(True, count, head)


def _unchained_events(store: Store, chained: int) -> str | None:
    """The id of an AuditEvent resource without a chain row, if any (the full scan
    runs only when the count of resources differs from `chained`, the rows stored
    as resources)."""
    from openrecord.service.audit import AUDIT_TYPE
    from openrecord.store.query import SearchQuery

    total = store.search(SearchQuery(AUDIT_TYPE, [], count=0, total=True)).total or 0
    if total == chained:
        return None
    for version in store.iter_current(AUDIT_TYPE):
        if not store.query("SELECT 1 FROM audit_chain WHERE event_id = ?", (version.id,)):
            return version.id
    return None
