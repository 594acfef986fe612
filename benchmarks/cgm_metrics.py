#!/usr/bin/env python3
"""CGM consensus metrics over one year of 5-minute readings (105,120), per call.

Times `summarize` (every metric incl. LBGI/HBGI, GRI, MAGE, % active), the compact
storage's paths (`summarize_series` over columns, `summarize_days` over day rows: what
`$cgm-summary` and the all-patients pass run), `daily` (365 per-day summaries) and
`hourly`, and beside them a plain numpy mean/SD/TIR of the
same values in the same run when numpy is importable (it is not an openrecord
dependency: run under an interpreter that has it, e.g. `PYTHONPATH=src python3 …`).

    python benchmarks/cgm_metrics.py [--runs 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from openrecord.care.glucose.metrics import (
    daily,
    glucose_stats,
    hourly,
    summarize,
    summarize_days,
    summarize_series,
)
from openrecord.care.glucose.readings import Reading, datetime_to_us

READINGS = 365 * 288
STEP_US = 300_000_000


def year_of_readings(seed: int = 6) -> list[Reading]:
    """A plausible trace: a daily rhythm of meal peaks and noise, every slot filled."""
    rng = random.Random(seed)
    start = datetime_to_us(datetime(2025, 1, 1, tzinfo=UTC))
    out: list[Reading] = []
    level = 140.0
    for i in range(READINGS):
        minute_of_day = (i * 5) % 1440
        meal = sum(
            70 * math.exp(-(((minute_of_day - m) / 60) ** 2)) for m in (8 * 60, 13 * 60, 19 * 60)
        )
        level += 0.1 * (120 + meal - level) + rng.gauss(0, 4)
        out.append(Reading(start + i * STEP_US, float(round(min(400.0, max(40.0, level))))))
    return out


def best_of(runs: int, call: Callable[[], Any]) -> float:
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        timings.append(time.perf_counter() - began)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    readings = year_of_readings()
    values = [r.mg_dl for r in readings]
    times_ms = array("q", [r.time_us // 1000 for r in readings])
    milli = array("i", [round(r.mg_dl * 1000) for r in readings])
    first, end = readings[0].time_us, readings[-1].time_us + STEP_US
    days = [
        (d, array("i", [t - d for t in times_ms[i : i + 288]]), milli[i : i + 288])
        for i, d in ((i, times_ms[i] - times_ms[i] % 86_400_000) for i in range(0, READINGS, 288))
    ]
    print(f"{len(readings):,} readings over 365 days (best of {args.runs})")
    rows = [
        ("summarize (all metrics, 1 year)", lambda: summarize(readings)),
        ("summarize_series (columns)", lambda: summarize_series(times_ms, milli, first, end)),
        ("summarize_days (day rows)", lambda: summarize_days(days, first, end)),
        ("glucose_stats (values only)", lambda: glucose_stats(values)),
        ("daily (365 summaries)", lambda: daily(readings)),
        ("hourly (24 groups)", lambda: hourly(readings)),
        (
            "plain Python mean/SD/TIR",
            lambda: (
                statistics.fmean(values),
                statistics.stdev(values),
                sum(1 for v in values if 70 <= v <= 180) / len(values),
            ),
        ),
    ]
    try:
        import numpy as np
    except ImportError:
        print("numpy not importable here: numpy comparison skipped")
    else:
        vector = np.asarray(values)
        rows.append(
            (
                "numpy mean/SD/TIR",
                lambda: (
                    vector.mean(),
                    vector.std(ddof=1),
                    np.count_nonzero((vector >= 70) & (vector <= 180)) / vector.size,
                ),
            )
        )
        rows.append(("numpy incl. list->array", lambda: np.asarray(values).std(ddof=1)))
    for name, call in rows:
        print(f"{name:34s} {best_of(args.runs, call) * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
