"""Process-level tuning shared by the server and the CLI."""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


def settle_heap() -> None:
    """Exclude the long-lived start-up objects from garbage collection.

    The compiled definitions and search plans are hundreds of thousands of objects
    that live as long as the process. Left in the collected generations, every full
    collection walks them all: on ingest that cost about a third of the time per
    resource (benchmarks/ingest.py). Freezing them after start-up, and collecting
    the young generation less often (JSON parsing allocates many short-lived
    containers), removes that cost without disabling collection.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(50_000, second, third)
