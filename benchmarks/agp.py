#!/usr/bin/env python3
"""The AGP report: time to compute and draw it, and to write SVG and PDF, for 14 and 90
days of 5-minute readings (4,032 and 25,920), best of `--runs`, in one run side by side.

Stages: `agp_data` (the modal-day percentiles and the daily traces), `agp_page` (the
drawing), `render_svg`, `render_pdf`; and the sizes of the two files. The readings are
synthetic (a daily rhythm of meal peaks and noise); the store is not involved (the
HTTP path adds the reading of the readings, measured in the `$cgm-summary` figures).

    python benchmarks/agp.py [--runs 5]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from openrecord.care.glucose.agp import agp_data
from openrecord.care.glucose.agp_draw import agp_pages
from openrecord.care.glucose.agp_pdf import render_pdf
from openrecord.care.glucose.agp_svg import render_svg
from openrecord.care.glucose.metrics import summarize
from openrecord.care.glucose.readings import Reading, datetime_to_us

STEP_US = 300_000_000


def readings(days: int, seed: int = 6) -> list[Reading]:
    rng = random.Random(seed)
    start = datetime_to_us(datetime(2025, 1, 1, tzinfo=UTC))
    out: list[Reading] = []
    level = 140.0
    for i in range(days * 288):
        minute = (i * 5) % 1440
        meal = sum(70 * math.exp(-(((minute - m) / 60) ** 2)) for m in (480, 780, 1140))
        level += 0.1 * (120 + meal - level) + rng.gauss(0, 6)
        out.append(Reading(start + i * STEP_US, min(400.0, max(40.0, level))))
    return out


def best_of(runs: int, call: Callable[[], Any]) -> float:
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        timings.append(time.perf_counter() - began)
    return min(timings)


def measure(days: int, runs: int, zone: ZoneInfo) -> str:
    """One table row: the stages' best times (ms) and the file sizes (KB)."""
    series = readings(days)
    summary = summarize(series, series[0].time_us, series[0].time_us + days * 86_400_000_000)
    data = agp_data("p", "Test Patient", summary, series, days, zone)
    page = agp_pages(data)
    t_data = best_of(runs, lambda: agp_data("p", "Test Patient", summary, series, days, zone))
    t_page = best_of(runs, lambda: agp_pages(data))
    t_svg = best_of(runs, lambda: render_svg(page))
    t_pdf = best_of(runs, lambda: render_pdf(page))
    total = t_data + t_page + t_svg + t_pdf
    return (
        f"{days:>5} {len(series):>9,} {t_data * 1e3:>8.1f} {t_page * 1e3:>8.1f}"
        f" {t_svg * 1e3:>7.1f} {t_pdf * 1e3:>7.1f} {total * 1e3:>9.1f}"
        f" {len(render_svg(page)) / 1024:>7.0f} {len(render_pdf(page)) / 1024:>7.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    zone = ZoneInfo("Europe/Berlin")
    print(
        f"{'days':>5} {'readings':>9} {'data ms':>8} {'page ms':>8} {'svg ms':>7}"
        f" {'pdf ms':>7} {'total ms':>9} {'svg KB':>7} {'pdf KB':>7}"
    )
    for days in (14, 90):
        print(measure(days, args.runs, zone))


if __name__ == "__main__":
    main()
