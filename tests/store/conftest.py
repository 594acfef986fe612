"""Store fixtures: `store`, an open, empty store on each backend (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openrecord.store import Store, open_store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()
