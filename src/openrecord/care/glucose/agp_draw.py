"""The AGP report laid out as one drawing of `agp_shapes` (rectangles, paths and text in
page points) that the SVG and PDF renderers both draw, so the two look the same.

The layout follows the AGP report v5 of the International Diabetes Center (Johnson et
al., Diabetes Technol Ther 2019;21:S2-17): the glucose statistics and targets (targets of
Battelino et al., Diabetes Care 2019;42:1593: TIR > 70 %, < 70 mg/dL < 4 %, < 54 < 1 %,
> 180 < 25 %, > 250 < 5 %, CV ≤ 36 %), the time-in-ranges bar (very high orange, high
yellow, target green, low red, very low dark red), the modal-day profile (median line,
25-75 % and 5-95 % bands, target range lines at 70 and 180 mg/dL) and the daily profiles
(midnight to midnight, the last 14 days). Coordinates: points (1/72 in), origin at the
top left, y downwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo

from openrecord.care.glucose.agp import AgpData, DayTrace
from openrecord.care.glucose.agp_shapes import (
    COLOURS,
    Group,
    Page,
    Path,
    Rect,
    Shape,
    Text,
    text_width,
)
from openrecord.care.glucose.readings import mgdl_to_mmoll

__all__ = ["PAGE_SIZES", "Page", "agp_page", "agp_pages"]  # Page: what agp_pages returns

PAGE_SIZES = {"a4": (842.0, 595.0), "letter": (792.0, 612.0)}  # landscape
_TOP_MGDL = 350.0
_DAY_US = 86_400_000_000
_DAILY_PANELS = 14


# -- text helpers --------------------------------------------------------------------------


def _glucose(mg_dl: float, unit: str) -> str:
    return f"{mgdl_to_mmoll(mg_dl):.1f}" if unit == "mmol/L" else f"{mg_dl:.0f}"


def _limit(mg_dl: float, unit: str) -> str:
    """A range limit as the consensus writes it (3.9, 10.0, 13.9 mmol/L)."""
    return f"{mg_dl / 18.0:.1f}" if unit == "mmol/L" else f"{mg_dl:.0f}"


def _per_day(percent: float) -> str:
    if 0 < percent / 100.0 * 1440 < 0.5:
        return "<1min"
    minutes = round(percent / 100.0 * 1440)
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours}h {rest}min"
    return f"{hours}h" if hours else f"{rest}min"


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return "<1%" if 0 < value < 0.5 else f"{value:.0f}%"


def _day(time_us: int, zone: tzinfo) -> str:
    moment = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=time_us)
    return moment.astimezone(zone).date().isoformat()


def _section(x: float, y: float, w: float, title: str) -> list[Shape]:
    return [
        Rect(x, y, w, 14, COLOURS["header"]),
        Text(x + 6, y + 10, title.upper(), 8.5, bold=True, fill="#FFFFFF"),
    ]


# -- panels --------------------------------------------------------------------------------


def _statistics(data: AgpData, unit: str, x: float, y: float, w: float) -> Group:
    s, stats = data.summary, data.summary.stats
    right = x + w - 6
    items: list[Shape] = _section(x, y, w, "Glucose statistics and targets")
    line = y + 28.0
    first, last = _day(s.start_us, data.zone), _day(max(s.start_us, s.end_us - 1), data.zone)
    items.append(Text(x + 6, line, f"{first} - {last}", 8.5, bold=True))
    items.append(Text(right, line, f"{s.days:.0f} days", 8.5, bold=True, anchor="end"))
    line += 12
    items.append(Text(x + 6, line, "% Time CGM is active", 8.5))
    items.append(Text(right, line, f"{s.active_percent:.1f}%", 8.5, bold=True, anchor="end"))
    if not s.sufficient:
        line += 11
        items.append(
            Text(
                x + 6,
                line,
                "Fewer than 14 days or less than 70% active: interpret with care.",
                7.5,
                fill=COLOURS["low"],
            )
        )
    line += 17
    items.append(Text(x + 6, line, "Glucose ranges", 8, bold=True))
    items.append(Text(right, line, "Targets: % of readings (time/day)", 8, bold=True, anchor="end"))
    items.append(Path([(x + 6, line + 3), (right, line + 3)], stroke=COLOURS["grid"]))
    u = unit
    rows = (
        (f"Target range {_limit(70, u)}-{_limit(180, u)} {u}", "Greater than 70%", 70.0),
        (f"Below {_limit(70, u)} {u}", "Less than 4%", 4.0),
        (f"Below {_limit(54, u)} {u}", "Less than 1%", 1.0),
        (f"Above {_limit(180, u)} {u}", "Less than 25%", 25.0),
        (f"Above {_limit(250, u)} {u}", "Less than 5%", 5.0),
    )
    for label, target, percent in rows:
        line += 11
        items.append(Text(x + 6, line, label, 8))
        items.append(Text(right, line, f"{target} ({_per_day(percent)})", 8, anchor="end"))
    line += 11
    items.append(
        Text(
            x + 6,
            line,
            f"Each 5% increase in time in range ({_limit(70, u)}-{_limit(180, u)} {u})"
            " is clinically beneficial.",
            7,
            fill=COLOURS["muted"],
        )
    )
    items.append(Path([(x + 6, line + 4), (right, line + 4)], stroke=COLOURS["grid"]))
    mean = "-" if stats.mean is None else f"{_glucose(stats.mean, unit)} {unit}"
    gmi = "-" if stats.gmi is None else f"{stats.gmi:.1f}%"
    cv = "-" if stats.cv is None else f"{stats.cv:.1f}%"
    for label, value in (
        ("Average glucose", mean),
        ("Glucose management indicator (GMI)", gmi),
        ("Glucose variability", cv),
    ):
        line += 13
        items.append(Text(x + 6, line, label, 8.5))
        items.append(Text(right, line, value, 9.5, bold=True, anchor="end"))
    line += 10
    items.append(
        Text(
            x + 6,
            line,
            "Defined as percent coefficient of variation (%CV); target 36% or lower",
            7,
            fill=COLOURS["muted"],
        )
    )
    return Group("Glucose statistics and targets", items)


def _ranges(data: AgpData, unit: str, x: float, y: float, w: float, h: float) -> Group:
    stats = data.summary.stats
    u = unit
    bands = (
        ("very-high", "Very high", f">{_limit(250, u)} {u}", stats.time_very_high),
        ("high", "High", f"{_limit(181, u)}-{_limit(250, u)} {u}", stats.time_high),
        ("target", "Target", f"{_limit(70, u)}-{_limit(180, u)} {u}", stats.time_in_range),
        ("low", "Low", f"{_limit(54, u)}-{_limit(69, u)} {u}", stats.time_low),
        ("very-low", "Very low", f"<{_limit(54, u)} {u}", stats.time_very_low),
    )
    if unit == "mmol/L":  # the consensus writes 10.1-13.9 and 3.0-3.8
        bands = (
            bands[0],
            ("high", "High", f"10.1-13.9 {u}", stats.time_high),
            bands[2],
            ("low", "Low", f"3.0-3.8 {u}", stats.time_low),
            bands[4],
        )
    items: list[Shape] = _section(x, y, w, "Time in ranges")
    bar_x, bar_w = x + 24, 40.0
    top, bottom = y + 26, y + h - 8
    # Proportional heights, a non-zero band at least 3 pt high so it stays visible.
    shares = [max(0.0, value or 0.0) for *_, value in bands]
    total = sum(shares) or 1.0
    tall = bottom - top
    heights = [max(3.0, tall * v / total) if v > 0 else 0.0 for v in shares]
    excess = sum(heights) - tall
    biggest = heights.index(max(heights))
    heights[biggest] -= excess
    at = top
    middles: list[float] = []
    for (key, name, _, value), height in zip(bands, heights, strict=True):
        if height > 0:
            items.append(
                Group(
                    f"{name}: {_percent(value)}",
                    [Rect(bar_x, at, bar_w, height, COLOURS[key], "#FFFFFF", 0.6)],
                )
            )
        middles.append(at + height / 2)
        at += height
    label_x = bar_x + bar_w + 40
    value_x = x + w - 110
    slots = [top + 8 + i * (tall - 16) / 4 for i in range(5)]
    for (key, name, span, value), middle, slot in zip(bands, middles, slots, strict=True):
        items.append(
            Path(
                [(bar_x + bar_w + 2, middle), (label_x - 12, slot - 3), (label_x - 4, slot - 3)],
                stroke=COLOURS["muted"],
                width=0.4,
            )
        )
        items.append(Rect(label_x - 2, slot - 7, 6, 6, COLOURS[key]))
        items.append(Text(label_x + 8, slot, name, 8.5, bold=True))
        items.append(Text(label_x + 8 + text_width(name, 8.5, True) + 4, slot, span, 8))
        after = label_x + 8 + text_width(name, 8.5, True) + 4 + text_width(span, 8) + 4
        if after < value_x - 8:
            items.append(
                Path(
                    [(after, slot - 2), (value_x - 4, slot - 2)],
                    stroke=COLOURS["grid"],
                    width=0.5,
                    dash=(1, 2),
                )
            )
        percent = value or 0.0
        items.append(Text(value_x + 30, slot, _percent(value), 9.5, bold=True, anchor="end"))
        items.append(Text(value_x + 34, slot, f"({_per_day(percent)})", 8))
    above = (stats.time_high or 0.0) + (stats.time_very_high or 0.0)
    below = (stats.time_low or 0.0) + (stats.time_very_low or 0.0)
    items.append(
        Text(
            x + w - 6,
            y + 24,
            f"High + very high: {_percent(above)} (goal less than 25%)",
            7.5,
            anchor="end",
            fill=COLOURS["muted"],
        )
    )
    items.append(
        Text(
            x + w - 6,
            bottom + 4,
            f"Low + very low: {_percent(below)} (goal less than 4%)",
            7.5,
            anchor="end",
            fill=COLOURS["muted"],
        )
    )
    return Group("Time in ranges", items)


def _runs(values: Sequence[float | None]) -> list[list[int]]:
    """Index runs where the value is defined."""
    runs: list[list[int]] = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _profile(data: AgpData, unit: str, x: float, y: float, w: float, h: float) -> Group:
    items: list[Shape] = _section(x, y, w, "Ambulatory glucose profile (AGP)")
    items.append(
        Text(
            x + 6,
            y + 25,
            "AGP is a summary of glucose values from the report period, with median (50%)"
            " and other percentiles shown as if they occurred in a single day.",
            7.5,
            fill=COLOURS["muted"],
        )
    )
    left, right = x + 44, x + w - 34
    top, bottom = y + 42, y + h - 14
    profile = data.profile

    def px(minute: float) -> float:
        return left + (right - left) * minute / 1440.0

    def py(mg_dl: float) -> float:
        return bottom - (bottom - top) * min(max(mg_dl, 0.0), _TOP_MGDL) / _TOP_MGDL

    for hour in range(0, 25, 3):
        items.append(Path([(px(hour * 60), top), (px(hour * 60), bottom)], stroke=COLOURS["grid"]))
        label = {0: "12am", 12: "12pm", 24: "12am"}.get(hour) or (
            f"{hour}am" if hour < 12 else f"{hour - 12}pm"
        )
        items.append(Text(px(hour * 60), bottom + 10, label, 7.5, anchor="middle"))
    bins = profile.bin_minutes
    n = len(profile.counts)
    curves = profile.curves

    def line_points(p: int, run: list[int]) -> list[tuple[float, float]]:
        values = curves[p]
        points = [(px((i + 0.5) * bins), py(values[i] or 0.0)) for i in run]
        # The modal day wraps round midnight: close each end at the midnight value.
        first, last = values[0], values[n - 1]
        if first is not None and last is not None:
            midnight = py((first + last) / 2)
            if run[0] == 0:
                points.insert(0, (px(0), midnight))
            if run[-1] == n - 1:
                points.append((px(1440), midnight))
        return points

    def band(low: int, high: int, colour: str, label: str) -> Group:
        shapes: list[Shape] = []
        defined = [
            None if a is None or b is None else a
            for a, b in zip(curves[low], curves[high], strict=True)
        ]
        for run in _runs(defined):
            upper = line_points(high, run)
            lower = line_points(low, run)
            shapes.append(Path(upper + lower[::-1], fill=colour, closed=True))
        return Group(label, shapes)

    items.append(band(5, 95, COLOURS["band-outer"], "5th to 95th percentile band"))
    items.append(band(25, 75, COLOURS["band-inner"], "25th to 75th percentile band"))
    for p in (5, 95):
        for run in _runs(curves[p]):
            items.append(
                Path(line_points(p, run), stroke=COLOURS["band-edge"], width=0.6, dash=(2, 1.5))
            )
    median = Group(
        "Median (50th percentile)",
        [
            Path(line_points(50, run), stroke=COLOURS["median"], width=1.8)
            for run in _runs(curves[50])
        ],
    )
    for level, colour, width, dash in (
        (54, COLOURS["muted"], 0.5, (3.0, 2.0)),
        (70, COLOURS["target"], 1.2, ()),
        (180, COLOURS["target"], 1.2, ()),
        (250, COLOURS["muted"], 0.5, (3.0, 2.0)),
    ):
        items.append(
            Path([(left, py(level)), (right, py(level))], colour, None, width, False, dash)
        )
    items.append(median)
    items.append(Rect(left, top, right - left, bottom - top, None, "#999999", 0.6))
    previous = -1e9
    for level in (350, 250, 180, 70, 54, 0):  # top down, each label at least 8 pt below
        at = max(py(level) + 2.5, previous + 8)
        items.append(Text(left - 4, at, _limit(level, unit), 7.5, bold=True, anchor="end"))
        previous = at
    items.append(Text(left - 4, top - 5, unit, 7, anchor="end", fill=COLOURS["muted"]))
    # Percentile names at the right end, pushed apart so they never overlap.
    ends: list[tuple[float, str]] = []
    for p in (95, 75, 50, 25, 5):
        values = [v for v in curves[p] if v is not None]
        if values:
            ends.append((py(curves[p][-1] or values[-1]), f"{p}%"))
    placed: list[float] = []
    for target, _ in ends:
        placed.append(max(target, placed[-1] + 8) if placed else target)
    for (_, label), at in zip(ends, placed, strict=True):
        items.append(Text(right + 4, at + 2.5, label, 7, bold=label == "50%"))
    return Group("Ambulatory glucose profile: percentiles by time of day", items)


def _high_low_fill(
    points: list[tuple[float, float]], limit: float, above: bool
) -> list[list[tuple[float, float]]]:
    """Polygons between a trace and the level `limit`, one per excursion beyond it, with
    the exact crossing points (so no clipping is needed and in-range stretches cost
    nothing)."""

    def beyond(value: float) -> bool:
        return value > limit if above else value < limit

    polygons: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for i, (t, v) in enumerate(points):
        if i and beyond(points[i - 1][1]) != beyond(v):
            t0, v0 = points[i - 1]
            crossing = t0 + (t - t0) * (limit - v0) / (v - v0)
            if current:  # leaving: close this excursion at the crossing
                current.append((crossing, limit))
                polygons.append(current)
                current = []
            else:  # entering
                current = [(crossing, limit)]
        if beyond(v):
            if not current:  # the run starts beyond the limit
                current = [(t, limit)]
            current.append((t, v))
    if current:
        current.append((current[-1][0], limit))
        polygons.append(current)
    return polygons


def _day_panel(day: DayTrace, cx: float, cy: float, cw: float, ch: float) -> Group:
    """One day's trace over 0-350 mg/dL, above 180 filled yellow and below 70 red."""
    span = day.end_us - day.start_us
    inner_top = cy + 11

    def px(elapsed_us: int) -> float:
        return cx + cw * elapsed_us / span

    def py(mg_dl: float) -> float:
        return cy + ch - (cy + ch - inner_top) * min(max(mg_dl, 0.0), _TOP_MGDL) / _TOP_MGDL

    shapes: list[Shape] = [Rect(cx, cy, cw, ch, "#FFFFFF", "#999999", 0.5)]
    shapes.append(Text(cx + 3, cy + 8.5, f"{day.day:%a} {day.day.day} {day.day:%b}", 6.5, True))
    noon = px(span // 2)
    shapes.append(Path([(noon, inner_top), (noon, cy + ch)], stroke=COLOURS["grid"], width=0.4))
    for run in day.runs:
        scaled = [(px(t), v) for t, v in run]
        for limit, above, colour in ((180.0, True, "high"), (70.0, False, "low")):
            for fill in _high_low_fill(scaled, limit, above):
                shapes.append(
                    Path([(a, py(b)) for a, b in fill], fill=COLOURS[colour], closed=True)
                )
    for level in (70, 180):
        shapes.append(
            Path([(cx, py(level)), (cx + cw, py(level))], stroke=COLOURS["target"], width=0.6)
        )
    for run in day.runs:
        if len(run) > 1:
            points = [(px(t), py(v)) for t, v in run]
            shapes.append(Path(points, stroke=COLOURS["trace"], width=0.6))
    if not day.runs:
        shapes.append(
            Text(cx + cw / 2, cy + ch / 2 + 3, "no data", 7, False, "middle", COLOURS["muted"])
        )
    return Group(f"Daily profile {day.day.isoformat()}", shapes)


def _daily(days: Sequence[DayTrace], caption: str, x: float, y: float, w: float, h: float) -> Group:
    """Daily profiles, 7 to a row, in as many rows as `days` need."""
    items: list[Shape] = _section(x, y, w, "Daily glucose profiles")
    items.append(Text(x + 6, y + 25, caption, 7.5, fill=COLOURS["muted"]))
    columns = 7
    rows = max(1, -(-len(days) // columns))
    top = y + 31
    cell_w = w / columns
    cell_h = min((y + h - top) / rows, 80.0)
    for index, day in enumerate(days):
        cx = x + (index % columns) * cell_w + 1
        cy = top + (index // columns) * cell_h + 1
        items.append(_day_panel(day, cx, cy, cell_w - 2, cell_h - 3))
    return Group("Daily glucose profiles", items)


def _description(data: AgpData, unit: str) -> str:
    s, stats = data.summary, data.summary.stats
    parts = [f"{s.days:.0f} days, CGM active {s.active_percent:.1f}%"]
    if stats.mean is not None:
        parts.append(f"average glucose {_glucose(stats.mean, unit)} {unit}")
    if stats.gmi is not None:
        parts.append(f"GMI {stats.gmi:.1f}%")
    if stats.cv is not None:
        parts.append(f"CV {stats.cv:.1f}%")
    parts.append(
        "time in ranges: very high {}, high {}, target {}, low {}, very low {}".format(
            *(
                _percent(v)
                for v in (
                    stats.time_very_high,
                    stats.time_high,
                    stats.time_in_range,
                    stats.time_low,
                    stats.time_very_low,
                )
            )
        )
    )
    return "; ".join(parts) + "."


def _header(data: AgpData, width: float, heading: str) -> list[Shape]:
    m = 24.0
    s = data.summary
    who = data.patient_name or f"Patient/{data.patient}"
    first, last = _day(s.start_us, data.zone), _day(max(s.start_us, s.end_us - 1), data.zone)
    return [
        Text(m, m + 14, heading, 15, bold=True),
        Text(width - m, m + 6, f"{who} (id {data.patient})", 9, bold=True, anchor="end"),
        Text(
            width - m,
            m + 18,
            f"{first} to {last}, {s.days:.0f} days; times of day in {data.zone}",
            8,
            anchor="end",
        ),
        Path([(m, m + 24), (width - m, m + 24)], stroke=COLOURS["header"], width=1),
    ]


def agp_pages(data: AgpData, unit: str = "mg/dL", size: str = "a4") -> list[Page]:
    """The AGP report: the one-page AGP (daily profiles of the last 14 days), then, when
    the period is longer, pages of the daily profiles of every day (35 a page)."""
    if unit not in ("mg/dL", "mmol/L"):
        raise ValueError(f"unit must be mg/dL or mmol/L, not {unit!r}")
    if size not in PAGE_SIZES:
        raise ValueError(f"size must be one of {sorted(PAGE_SIZES)}, not {size!r}")
    width, height = PAGE_SIZES[size]
    m = 24.0
    inner = width - 2 * m
    s = data.summary
    who = data.patient_name or f"Patient/{data.patient}"
    first, last = _day(s.start_us, data.zone), _day(max(s.start_us, s.end_us - 1), data.zone)
    items = _header(data, width, "AGP Report: Continuous Glucose Monitoring")
    row1, row1_h = m + 30, 178.0
    left_w = inner * 0.5 - 6
    items.append(_statistics(data, unit, m, row1, left_w))
    items.append(_ranges(data, unit, m + left_w + 12, row1, inner - left_w - 12, row1_h))
    row2 = row1 + row1_h + 8
    row3 = height - m - 136
    items.append(_profile(data, unit, m, row2, inner, row3 - 8 - row2))
    shown = data.days[-_DAILY_PANELS:]
    caption = "Each daily profile represents a midnight-to-midnight period"
    if len(data.days) > len(shown):
        caption += f" (the last {len(shown)} of {len(data.days)} days; all days follow)"
    items.append(_daily(shown, caption + ".", m, row3, inner, height - m - row3))
    title = f"Ambulatory Glucose Profile of {who}, {first} to {last}"
    description = _description(data, unit)
    pages = [Page(width, height, title, description, items)]
    if len(data.days) > _DAILY_PANELS:
        per_page = 35
        for at in range(0, len(data.days), per_page):
            chunk = data.days[at : at + per_page]
            more = _header(data, width, "AGP Report: Daily glucose profiles")
            caption = (
                f"Days {at + 1}-{at + len(chunk)} of {len(data.days)}; each daily profile"
                " represents a midnight-to-midnight period."
            )
            more.append(_daily(chunk, caption, m, m + 30, inner, height - 2 * m - 30))
            pages.append(Page(width, height, title, f"Daily profiles, {caption}", more))
    if len(pages) > 1:
        for number, page in enumerate(pages, start=1):
            footer = f"Page {number} of {len(pages)}"
            page.items.append(Text(width - m, height - 8, footer, 7, anchor="end"))
    return pages


def agp_page(data: AgpData, unit: str = "mg/dL", size: str = "a4") -> Page:
    """The one-page AGP report (the first of `agp_pages`)."""
    return agp_pages(data, unit, size)[0]
