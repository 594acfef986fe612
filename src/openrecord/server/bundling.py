"""searchset and history Bundles with their paging links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from openrecord.fhir.outcome import Issue, operation_outcome
from openrecord.service.responses import history_entry
from openrecord.store.base import HistoryPage, StoredVersion

__all__ = ["history_bundle", "page_link", "searchset"]


def page_link(url: str, params: Sequence[tuple[str, str]], **changes: str | int) -> str:
    """`url` with `params`, replacing (or adding) the `changes`."""
    kept = [(k, v) for k, v in params if k not in changes]
    kept.extend((k, str(v)) for k, v in changes.items())
    return f"{url}?{urlencode(kept)}" if kept else url


def searchset(
    *,
    base: str,
    self_url: str,
    params: Sequence[tuple[str, str]],
    resources: list[StoredVersion],
    bodies: list[bytes],
    total: int | None,
    next_cursor: str | None,
    previous_cursor: str | None,
    warnings: list[Issue],
    included: Sequence[tuple[StoredVersion, bytes]] = (),
    fragments: Sequence[str] = (),
) -> dict[str, Any]:
    """`params` are the request's: `self` is the page served, `first` drops its position,
    `next`/`previous` carry keyset cursors (stable while others write), never offsets."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    unpositioned = [(k, v) for k, v in params if k not in ("_cursor", "_offset")]
    links = [
        {"relation": "self", "url": page_link(self_url, params)},
        {"relation": "first", "url": page_link(self_url, unpositioned)},
    ]
    if previous_cursor is not None:
        url = page_link(self_url, unpositioned, _cursor=previous_cursor)
        links.append({"relation": "previous", "url": url})
    if next_cursor is not None:
        links.append(
            {"relation": "next", "url": page_link(self_url, unpositioned, _cursor=next_cursor)}
        )
    bundle["link"] = links
    # `fragments`: a contained match's id; its fullUrl is the container's + `#id`
    # (search.html#contained)
    marks = [f"#{f}" if f else "" for f in fragments] or [""] * len(resources)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base}/{r.type}/{r.id}{mark}",
            "resource": orjson.Fragment(body),
            "search": {"mode": "match"},
        }
        for r, body, mark in zip(resources, bodies, marks, strict=True)
    ]
    entries.extend(
        {
            "fullUrl": f"{base}/{r.type}/{r.id}",
            "resource": orjson.Fragment(body),
            "search": {"mode": "include"},
        }
        for r, body in included
    )
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def history_bundle(
    *,
    base: str,
    self_url: str,
    params: Sequence[tuple[str, str]],
    page: HistoryPage,
    offset: int,
    count: int,
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if page.total is not None:
        bundle["total"] = page.total
    pinned = [(k, v) for k, v in params if k != "_until"] + [("_until", str(page.snapshot))]
    links = [{"relation": "self", "url": page_link(self_url, params)}]
    if offset > 0:
        links.append(
            {
                "relation": "previous",
                "url": page_link(self_url, pinned, _offset=max(0, offset - count)),
            }
        )
    more = page.total is not None and offset + count < page.total
    if more or (page.total is None and len(page.entries) == count):
        links.append(
            {"relation": "next", "url": page_link(self_url, pinned, _offset=offset + count)}
        )
    bundle["link"] = links
    if page.entries:
        bundle["entry"] = [history_entry(v, base) for v in page.entries]
    return bundle
