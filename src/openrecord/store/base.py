"""The storage interface: one contract, two backends (SQLite and PostgreSQL).

The store keeps the current version and the full history of every resource,
the typed search index of the current versions, and answers reads, history and
searches. It knows nothing about HTTP or authorization: the record service
(`openrecord.service`) is the only caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from openrecord.fhir.search_values import IndexEntry
from openrecord.store.query import SearchQuery

__all__ = [
    "ANNOUNCED_TYPES",
    "HistoryPage",
    "InvalidCursor",
    "SearchPage",
    "Store",
    "StoredVersion",
    "UnsupportedSearch",
    "VersionConflict",
    "WriteTx",
    "written_channel",
]

Method = Literal["POST", "PUT", "PATCH", "DELETE"]

# Resource types whose writes every transaction announces (`WriteTx.notify` on
# `written_channel(type)`): caches of them (the consent rules) can then answer without
# a lookup per request while they watch that channel.
ANNOUNCED_TYPES = frozenset({"Consent"})


def written_channel(type: str) -> str:
    """The channel a transaction writing a resource of `type` notifies (ANNOUNCED_TYPES)."""
    return f"openrecord_written_{type.lower()}"


@dataclass(frozen=True, slots=True)
class StoredVersion:
    type: str
    id: str
    version: int
    last_updated: int  # microseconds since the Unix epoch, UTC
    method: Method
    data: bytes | None  # the resource JSON exactly as served (meta included); None if deleted
    seq: int = 0  # position in the server-wide history, assigned by the store on put

    @property
    def deleted(self) -> bool:
        return self.data is None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[StoredVersion]  # newest first
    total: int | None
    snapshot: int  # the highest seq the page saw: pass it back as `until` for stable paging


@dataclass(frozen=True, slots=True)
class SearchPage:
    resources: list[StoredVersion]
    total: int | None  # only when the query asked for it
    next_cursor: str | None = None  # opaque `_cursor` of the following page; None: last
    previous_cursor: str | None = None  # of the page before; None: first (or unknown)
    explain: str | None = None  # SQL and plan, when the query asked (debug setting)
    # `_containedType=contained`: per resource, the id of the contained resource that
    # matched inside it ("" for a top-level match); empty otherwise
    contained_ids: tuple[str, ...] = ()


class UnsupportedSearch(ValueError):
    """A modifier or criterion this store cannot answer (the caller answers 400)."""


class InvalidCursor(UnsupportedSearch):
    """A `_cursor` that is unreadable, altered, or from another search (400, `_cursor`)."""


class VersionConflict(Exception):
    """Another writer created the same version concurrently (unique key violated)."""


class WriteTx(ABC):
    """One database transaction. Writes are visible to others only after commit."""

    @abstractmethod
    def current(self, type: str, id: str) -> StoredVersion | None:
        """The current version (possibly a deletion), locked against concurrent writers."""

    @abstractmethod
    def put(self, version: StoredVersion, index: Sequence[IndexEntry]) -> None:
        """Append `version` to history, make it current and replace the row's index.

        Version 1 written with method POST is taken to be a new id (the caller made it
        unique), so the store does not look for an existing row first.
        """

    @abstractmethod
    def search(self, query: SearchQuery) -> SearchPage:
        """Search inside this transaction (conditional create/update/delete)."""

    @abstractmethod
    def lock(self, key: str) -> None:
        """Serialize writers on `key` until commit (conditional create races)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a non-FHIR state table (sessions, tokens, jobs, keys)
        inside this transaction; `?` placeholders on every backend. Returns the rows
        (none for a statement without a result)."""

    def notify(self, channel: str) -> None:  # noqa: B027 (a no-op unless overridden)
        """Tell every process watching `channel` (`Store.watch`) once this commits.
        Nothing to do where no process can watch (SQLite)."""

    @abstractmethod
    def reindex(
        self, items: Sequence[tuple[StoredVersion, Sequence[IndexEntry]]]
    ) -> list[StoredVersion]:
        """Replace the index rows of each item's resource, without a new version.

        An item is skipped when its resource's current version is no longer
        `item.version` (a concurrent write indexed the newer one itself). Returns the
        versions whose rows were replaced.
        """


class Store(ABC):
    #: Reads are quick and never wait for writers (SQLite WAL on a local file): the
    #: server may answer them on its event loop instead of a worker thread.
    inline_reads: bool = False

    @abstractmethod
    def read(self, type: str, id: str) -> StoredVersion | None: ...

    @abstractmethod
    def vread(self, type: str, id: str, version: int) -> StoredVersion | None: ...

    @abstractmethod
    def history(
        self,
        type: str | None = None,
        id: str | None = None,
        *,
        since: int | None = None,
        at: int | None = None,
        until: int | None = None,
        count: int = 20,
        offset: int = 0,
        total: bool = True,
    ) -> HistoryPage:
        """Versions, newest first: of one resource, one type, or the whole server.

        `since`: only versions last updated at or after it (microseconds UTC).
        `at`: only versions that were current at that instant (the latest version of each
        resource with last_updated <= at). `until`: only versions with seq <= until, so a
        client paging with offsets sees a stable list while others write.
        """

    @abstractmethod
    def search(self, query: SearchQuery) -> SearchPage: ...

    @abstractmethod
    def write(self) -> AbstractContextManager[WriteTx]:
        """Begin a write transaction: commits on normal exit, rolls back on exception."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read a non-FHIR state table outside any transaction (`?` placeholders).

        State tables are created by the migrations in `store/migrations_*.py`; the SQL a
        feature runs here must be valid on SQLite and PostgreSQL alike. Writes go
        through `write()` and `WriteTx.execute`, so they share the FHIR transaction.
        """

    def watch(self, channel: str, changed: Callable[[], None]) -> Callable[[], bool]:
        """Call `changed` after each committed transaction that called
        `notify(channel)`, in any process: from a background thread, and for this
        process's own commits also before `write()` returns (so it may be called twice
        for one commit: it should only invalidate). Returns whether the watch is
        live now: while it is not, notifications may be missed and a cache relying on
        them must not be used. Not live on backends without notifications (SQLite)."""
        return _never

    @property
    @abstractmethod
    def backend(self) -> str:
        """ "sqlite" or "postgresql": for the rare statement that differs."""

    @abstractmethod
    def iter_current(self, type: str | None = None) -> Iterator[StoredVersion]:
        """Every current, non-deleted resource (export, reindex)."""

    @abstractmethod
    def generation(self, type: str) -> int:
        """The highest history seq of `type` (0: never written): changes on every write."""

    @abstractmethod
    def close(self) -> None: ...


def _never() -> bool:
    return False
