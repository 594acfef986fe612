"""The audit trail's storage: a hash chain of AuditEvents, stored as resources in batches.

Appending is what every request pays for, so it is one row: `audit_chain` row `seq`
holds the event's JSON and SHA-256(hash of `seq - 1` ‖ canonical JSON of the event),
the rows numbered 1, 2, 3… without gaps. Appends serialize on one lock
(`WriteTx.lock`, a no-op under SQLite's single writer), so two writers never fork the
chain; the row commits with the interaction's writes (or, for a read, before its
response is sent), so nothing is accessed unaudited.

The chain is the record; the AuditEvent resources (searchable, readable by the patient
through their compartment) are derived from it by `catch_up`, which stores the rows
after the `audit_materialized` watermark as resources with their search index, in
batches: in the background beside the server (`background_catch_up`) and, first, before
anything reads or searches AuditEvents (`catch_up_if_behind`), so a reader never misses
an event. Storing and indexing an event costs ~10 index rows; doing it per request
doubled the cost of a read (docs/benchmarks.md, "Audit trail").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from functools import lru_cache
from typing import Any, TypeVar

import anyio
import orjson

from openrecord.fhir.definitions import definitions
from openrecord.fhir.search_index import IndexExtractor
from openrecord.service.audit_events import AUDIT_TYPE, AuditRecord, build_event
from openrecord.service.clock import now_micros
from openrecord.store.base import Store, StoredVersion, WriteTx

__all__ = [
    "CHAIN_LOCK",
    "GENESIS",
    "append_events",
    "append_later",
    "append_now",
    "background_catch_up",
    "behind",
    "canonical",
    "catch_up",
    "catch_up_if_behind",
    "chain_hash",
    "materialized_seq",
]

log = logging.getLogger("openrecord.audit")

GENESIS = "0" * 64  # the "previous hash" of seq 1
CHAIN_LOCK = "openrecord:audit-chain"
CATCH_UP_LOCK = "openrecord:audit-catch-up"
BATCH = 100  # events stored per catch-up transaction (a short hold of SQLite's writer)
IDLE_SECONDS = 0.5  # the background pass runs once this process appended nothing for this
MAX_BACKLOG = 20_000  # … or when this many events wait, busy or not
_appended_at = 0.0  # time.monotonic() of this process's last append


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes the chain hashes: the event's JSON with sorted keys, no whitespace."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(previous: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(previous.encode("ascii") + canonical(event)).hexdigest()


def append_events(tx: WriteTx, records: Sequence[AuditRecord]) -> None:
    """Chain the records' AuditEvents inside `tx` (which commits them with whatever
    else it writes). Holds the chain lock until that commit."""
    if not records:
        return
    global _appended_at
    _appended_at = time.monotonic()
    built = []  # built before the lock: only the chain position needs it
    for record in records:
        recorded = now_micros()
        event_id = str(uuid.uuid4())
        built.append((event_id, recorded, build_event(record, event_id, recorded)))
    tx.lock(CHAIN_LOCK)
    rows = tx.execute("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
    seq, previous = (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)
    chained: list[tuple[int, str, int, str, bytes]] = []
    for event_id, recorded, event in built:
        seq += 1
        previous = chain_hash(previous, event)
        chained.append((seq, event_id, recorded, previous, orjson.dumps(event)))
    for start in range(0, len(chained), _ROWS_PER_INSERT):
        part = chained[start : start + _ROWS_PER_INSERT]
        tx.execute(
            "INSERT INTO audit_chain (seq, event_id, recorded, hash, event) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?)"] * len(part)),
            [value for row in part for value in row],
        )


_ROWS_PER_INSERT = 200  # chain rows per INSERT statement (a group commit's batch)


# -- group commit ---------------------------------------------------------------------


def _write_batch(store: Store, records: Sequence[AuditRecord]) -> list[Exception | None]:
    """Append `records` in one transaction; if that fails, one transaction each, so a
    failure fails only its own request. The error of each record (None: appended)."""
    try:
        with store.write() as tx:
            append_events(tx, records)
    except Exception as exc:
        if len(records) == 1:
            return [exc]
        return [_write_batch(store, [record])[0] for record in records]
    return [None] * len(records)


LEADER_BATCHES = 8  # batches one caller writes before handing over (its own is the first)


class _Waiter:
    __slots__ = ("done", "error", "lead", "record")

    def __init__(self, record: AuditRecord) -> None:
        self.record = record
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch, not because it was written


class GroupAppender:
    """Appends from many threads, several per transaction (group commit).

    Every append holds the chain lock until its commit, so appends queue behind each
    other's commits (on PostgreSQL a WAL flush each). Here the first caller writes its
    own event and whatever queued meanwhile in one transaction, then what queued during
    that one (up to LEADER_BATCHES); the callers queued behind it wait, and after that
    the first of them writes the next batches. Alone, a caller
    writes at once (no hand-off to another thread); each returns only once its own
    event is committed, and raises if it could not be."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._busy = False

    def append(self, record: AuditRecord) -> None:
        me = _Waiter(record)
        with self._lock:
            self._queue.append(me)
            lead, self._busy = not self._busy, True
        if not lead:
            me.done.wait()
        if lead or me.lead:
            # Write what queued meanwhile too, a few batches at most: handing the next
            # batch to a waiting thread costs that thread's wake-up (up to the GIL's
            # switch interval), during which nothing is written.
            for _ in range(LEADER_BATCHES):
                with self._lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._busy = False
                        break
                self._write(batch)
            else:
                with self._lock:
                    if self._queue:  # the next batch: its first caller writes it
                        self._queue[0].lead = True
                        self._queue[0].done.set()
                    else:
                        self._busy = False
        if me.error is not None:
            raise me.error

    def _write(self, batch: list[_Waiter]) -> None:
        errors = _write_batch(self.store, [w.record for w in batch])
        for waiter, error in zip(batch, errors, strict=True):
            waiter.error = error
            waiter.done.set()


class BackgroundAppender:
    """Appends for callers that must not block (the event loop): a writer thread of
    its own takes everything queued since its last commit into one transaction and
    resolves each caller's future. It stops after a few idle seconds and starts again
    on the next submission."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cond = threading.Condition()
        self._queue: list[tuple[AuditRecord, Future[None]]] = []
        self._thread: threading.Thread | None = None

    def submit(self, record: AuditRecord) -> Future[None]:
        done: Future[None] = Future()
        with self._cond:
            self._queue.append((record, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(timeout=5)
                    if not self._queue:
                        self._thread = None
                        return
                batch, self._queue = self._queue, []
            self._write(batch)

    def _write(self, batch: list[tuple[AuditRecord, Future[None]]]) -> None:
        errors = _write_batch(self.store, [record for record, _ in batch])
        for (_, done), error in zip(batch, errors, strict=True):
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


_background: weakref.WeakKeyDictionary[Store, BackgroundAppender] = weakref.WeakKeyDictionary()
_appenders: weakref.WeakKeyDictionary[Store, GroupAppender] = weakref.WeakKeyDictionary()
_appenders_lock = threading.Lock()
A = TypeVar("A", GroupAppender, BackgroundAppender)


def _of(store: Store, made: weakref.WeakKeyDictionary[Store, A], kind: type[A]) -> A:
    """The store's appender of `kind` in this process, made on first use."""
    appender = made.get(store)
    if appender is None:
        with _appenders_lock:
            appender = made.get(store) or made.setdefault(store, kind(store))
    return appender


def append_later(store: Store, record: AuditRecord) -> Future[None]:
    """Append one event on the store's writer thread; the future is done once it is
    committed (its exception: it could not be)."""
    return _of(store, _background, BackgroundAppender).submit(record)


def append_now(store: Store, record: AuditRecord) -> None:
    """Append one event in a transaction of its own (grouped with concurrent ones);
    returns once it is committed, raises if it could not be."""
    _of(store, _appenders, GroupAppender).append(record)


# -- AuditEvent resources from the chain --------------------------------------------


@lru_cache(maxsize=1)
def _indexer() -> IndexExtractor:
    """AuditEvents are indexed with the built-in parameters (custom SearchParameters
    on AuditEvent apply after a `$reindex`)."""
    return IndexExtractor(definitions())


_WATERMARK = "SELECT seq FROM audit_materialized WHERE id = 1"


def materialized_seq(store: Store) -> int:
    """The last chain row stored as a resource (rows up to it are; none after)."""
    rows = store.query(_WATERMARK)
    return int(rows[0][0]) if rows else 0


def catch_up(store: Store, *, batch: int = BATCH) -> int:
    """Store every chained event after the watermark as an AuditEvent resource (with
    its search index), `batch` per transaction; returns how many. The events are read
    and indexed before the write transaction (the writer is held only to insert);
    safe to run from several processes at once: the watermark is checked again under
    a lock, and a batch another process stored meanwhile is dropped."""
    done = 0
    indexer = _indexer()
    while True:
        after = materialized_seq(store)
        chained = store.query(
            "SELECT seq, event_id, recorded, event FROM audit_chain"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, batch),
        )
        if not chained:
            return done
        prepared = []
        for _, event_id, recorded, data in chained:
            if data is None:  # chained before events were kept in the chain: stored
                continue
            data = bytes(data)
            version = StoredVersion(AUDIT_TYPE, str(event_id), 1, int(recorded), "POST", data)
            prepared.append((version, indexer.extract(orjson.loads(data))))
        with store.write() as tx:
            tx.lock(CATCH_UP_LOCK)
            rows = tx.execute(_WATERMARK)
            if (int(rows[0][0]) if rows else 0) != after:
                continue  # another process stored (some of) these: read again
            for version, index in prepared:
                tx.put(version, index)
            tx.execute(
                "INSERT INTO audit_materialized (id, seq) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                (int(chained[-1][0]),),
            )
        done += len(chained)
        if len(chained) < batch:
            return done


def behind(store: Store) -> int:
    """How many chained events are not stored as resources yet (one indexed query)."""
    rows = store.query(
        "SELECT (SELECT seq FROM audit_chain ORDER BY seq DESC LIMIT 1), (" + _WATERMARK + ")"
    )
    head, stored = (rows[0][0] or 0, rows[0][1] or 0) if rows else (0, 0)
    return max(int(head) - int(stored), 0)


def catch_up_if_behind(store: Store) -> None:
    """Before AuditEvents are read or searched: store what the chain holds beyond
    the resources (one indexed query when nothing is behind)."""
    if behind(store):
        catch_up(store)


def _background_pass(store: Store) -> None:
    """Catch up when this process has been idle for a moment, or when the backlog is
    large: indexing an event costs more than appending it, so under a burst of
    requests it waits for a lull rather than compete with them for the CPU and the
    writer (readers of AuditEvents catch up first anyway)."""
    idle = time.monotonic() - _appended_at >= IDLE_SECONDS
    if (idle and behind(store)) or behind(store) >= MAX_BACKLOG:
        catch_up(store)


@asynccontextmanager
async def background_catch_up(store: Store) -> AsyncIterator[None]:
    """Beside the server (its lifespan): a `_background_pass` every few seconds
    (`OPENRECORD_AUDIT_CATCH_UP_SECONDS`, default 2; 0 turns it off — reads and
    searches of AuditEvents still catch up first)."""
    seconds = float(os.environ.get("OPENRECORD_AUDIT_CATCH_UP_SECONDS", "2"))
    if seconds <= 0:
        yield
        return
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            try:
                started = time.monotonic()
                await anyio.to_thread.run_sync(_background_pass, store)
                wait = max(seconds - (time.monotonic() - started), 0.05)
            except Exception as exc:  # keep going; the type only (no PHI in logs)
                log.error("audit catch-up failed: %s", type(exc).__name__)
                wait = seconds
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        stop.set()
        with suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
