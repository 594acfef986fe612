"""The search index of contained resources (search.html#contained, `_contained`).

A contained resource is indexed with its own type's parameters, like any resource,
but its entries travel in the container's index list as one `ContainedValue` entry
per contained resource, after the container's own entries and before the full-text
entries. The store keeps them apart (under `#Type` parameters, see
store/_common.py), so that only `_contained=true|both` searches ever see them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from openrecord.fhir.search_values import ContainedValue, IndexEntry

__all__ = [
    "CONTAINED",
    "Extractor",
    "contained_body",
    "contained_entries",
    "split_contained_entries",
]

CONTAINED = "#contained"  # the param of a ContainedValue entry: not a search parameter


class Extractor(Protocol):
    def extract(self, resource: dict[str, Any]) -> list[IndexEntry]: ...


def contained_entries(resource: dict[str, Any], indexer: Extractor) -> list[IndexEntry]:
    """One entry per contained resource that has a resourceType and an id (others
    cannot be named in results), in document order."""
    found: list[IndexEntry] = []
    contained = resource.get("contained")
    if type(contained) is not list:
        return found
    for c in contained:
        if type(c) is not dict:
            continue
        rtype, cid = c.get("resourceType"), c.get("id")
        if type(rtype) is str and type(cid) is str and rtype and cid:
            found.append(
                IndexEntry(CONTAINED, ContainedValue(rtype, cid, tuple(indexer.extract(c))))
            )
    return found


def split_contained_entries(
    index: Sequence[IndexEntry],
) -> tuple[Sequence[IndexEntry], list[ContainedValue]]:
    """The index without its trailing contained entries, and those (in order)."""
    end = len(index)
    while end and index[end - 1].param == CONTAINED:
        end -= 1
    blocks = [e.value for e in index[end:] if isinstance(e.value, ContainedValue)]
    return index[:end], blocks


def contained_body(data: bytes, cid: str) -> bytes:
    """The JSON of the resource contained in `data` with id `cid` (`_containedType=
    contained`); `data` itself when `cid` is "" (a top-level match) or not found."""
    if not cid:
        return data
    for c in orjson.loads(data).get("contained") or ():
        if type(c) is dict and c.get("id") == cid:
            return orjson.dumps(c)
    return data
