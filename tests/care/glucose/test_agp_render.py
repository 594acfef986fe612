"""The AGP page rasterised — SVG with resvg, PDF with PDFium — and read back by colour.

Nothing here uses the layout's coordinates: the chart is found in the picture itself
(the two green target lines give the glucose scale and the 24-hour extent), and what is
found there is compared with values computed in the test from the readings:
- the time-in-ranges bar: its green share ≈ % of readings 70-180 mg/dL (whole mg/dL);
- at several times of day, the median line, the 25-75 % band and the 5-95 % band sit at
  the type-7 percentiles of the readings within ±30 minutes of that time of day;
- the daily profiles show yellow (above 180 mg/dL) when the readings go above 180, and
  red (below 70) when they go below 65, none when they never go below 70.
The helpers are shared with the HTTP test (tests/server/test_agp.py).
"""

from __future__ import annotations

import io
import math
import statistics
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

import pypdfium2
import pytest
import resvg_py
from PIL import Image

from openrecord.care.glucose.agp import agp_data
from openrecord.care.glucose.agp_draw import agp_page, agp_pages
from openrecord.care.glucose.agp_pdf import render_pdf
from openrecord.care.glucose.agp_shapes import COLOURS
from openrecord.care.glucose.agp_svg import render_svg
from openrecord.care.glucose.fhir import days_of_wear
from openrecord.care.glucose.metrics import summarize
from openrecord.care.glucose.readings import Reading, datetime_to_us
from tests.care.glucose.test_agp import simglucose

SCALE = 2  # pixels per point
Colour = tuple[int, int, int]


def rgb(hex_colour: str) -> Colour:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def raster_svg(svg: bytes) -> Image.Image:
    png = bytes(resvg_py.svg_to_bytes(svg_string=svg.decode(), zoom=SCALE))
    return Image.open(io.BytesIO(png)).convert("RGB")


def raster_pdf(pdf: bytes) -> Image.Image:
    document = pypdfium2.PdfDocument(pdf)
    assert len(document) == 1
    image = document[0].render(scale=SCALE).to_pil().convert("RGB")
    document.close()
    return image


def near(a: Colour, b: Colour, tolerance: int = 40) -> bool:
    return (
        abs(a[0] - b[0]) <= tolerance
        and abs(a[1] - b[1]) <= tolerance
        and abs(a[2] - b[2]) <= tolerance
    )


def window_percentiles(readings: list[Reading], zone: tzinfo, minute: int) -> dict[int, float]:
    """Type-7 percentiles of the readings whose local time of day is within the ±30 min
    window of the 5-minute bin holding `minute` (i.e. bins b-6 … b+6)."""
    b = minute // 5
    pooled = []
    for r in readings:
        local = r.time.astimezone(zone)
        k = (local.hour * 60 + local.minute) // 5
        if min((k - b) % 288, (b - k) % 288) <= 6:
            pooled.append(r.mg_dl)
    cuts = statistics.quantiles(sorted(pooled), n=100, method="inclusive")
    return {p: cuts[p - 1] for p in (5, 25, 50, 75, 95)}


def time_in_range(readings: list[Reading]) -> float:
    whole = [math.floor(r.mg_dl + 0.5) for r in readings]
    return 100.0 * sum(70 <= w <= 180 for w in whole) / len(whole)


def check_page(image: Image.Image, readings: list[Reading], zone: tzinfo) -> None:
    """Assert the picture shows the AGP of `readings` (see the module docstring)."""
    width, height = image.size
    px = image.load()
    assert px is not None
    green = rgb(COLOURS["target"])

    # 1. Time-in-ranges bar, top right: the column with the most band colours.
    bands = [rgb(COLOURS[k]) for k in ("very-high", "high", "target", "low", "very-low")]
    best: tuple[int, list[int]] = (0, [0] * 5)
    for x in range(width // 2, width * 2 // 3, 4):
        counts = [0] * 5
        for y in range(int(height * 0.1), int(height * 0.4)):
            for i, colour in enumerate(bands):
                if near(px[x, y], colour, 12):
                    counts[i] += 1
        if sum(counts) > sum(best[1]):
            best = (x, counts)
    _, counts = best
    assert sum(counts) > 100 * SCALE, "no time-in-ranges bar found"
    assert counts[0] + counts[1] + counts[3] + counts[4] >= 0
    share = 100.0 * counts[2] / sum(counts)
    assert share == pytest.approx(time_in_range(readings), abs=3.0)

    # 2. The profile: the target lines are the long green rows of the middle band.
    rows, runs = [], {}
    for y in range(int(height * 0.4), int(height * 0.8)):
        run = sum(1 for x in range(0, width, 8) if near(px[x, y], green))
        if run > width / 8 * 0.3:
            rows.append(y)
            runs[y] = run
    assert rows, "no target-range lines found"
    clusters: list[list[int]] = [[rows[0]]]
    for y in rows[1:]:
        if y - clusters[-1][-1] <= 2:
            clusters[-1].append(y)
        else:
            clusters.append([y])
    assert len(clusters) == 2, clusters
    y180, y70 = (sum(c) / len(c) for c in clusters)
    line = max(clusters[1], key=lambda y: runs[y])  # the 70 line's fullest row
    xs = [x for x in range(width) if near(px[x, line], green)]
    left, right = min(xs), max(xs)

    def value_at(y: float) -> float:
        return 70 + (y70 - y) * 110 / (y70 - y180)

    median, inner, outer = (
        rgb(COLOURS["median"]),
        rgb(COLOURS["band-inner"]),
        rgb(COLOURS["band-outer"]),
    )
    per_mgdl = (y70 - y180) / 110
    for minute in (90, 330, 610, 800, 1170, 1290):
        x = round(left + (right - left) * (minute // 5 * 5 + 2.5) / 1440)
        expected = window_percentiles(readings, zone, minute)
        # the chart's own rows, 0 to 350 mg/dL
        first, last = round(y180 - 170 * per_mgdl), round(y70 + 70 * per_mgdl)
        column = [px[x, y] if first <= y <= last else (255, 255, 255) for y in range(height)]
        medians = [y for y, c in enumerate(column) if near(c, median, 30)]
        assert medians, f"no median line at minute {minute}"
        assert value_at(sum(medians) / len(medians)) == pytest.approx(expected[50], abs=4)
        inside = [y for y, c in enumerate(column) if near(c, inner, 12)]
        assert inside, f"no 25-75 % band at minute {minute}"
        top, bottom = min(inside + medians), max(inside + medians)
        assert value_at(top) == pytest.approx(expected[75], abs=3 + 2 / per_mgdl)
        assert value_at(bottom) == pytest.approx(expected[25], abs=3 + 2 / per_mgdl)
        wide = [y for y, c in enumerate(column) if near(c, outer, 14)]
        assert wide, f"no 5-95 % band at minute {minute}"
        if expected[95] < 345:
            assert value_at(min(wide)) == pytest.approx(expected[95], abs=3 + 3 / per_mgdl)
        if expected[5] > 5:
            assert value_at(max(wide)) == pytest.approx(expected[5], abs=3 + 3 / per_mgdl)

    # 3. Daily profiles, bottom: yellow above 180 mg/dL, red below 70.
    def shows(colour: Colour) -> bool:
        return any(
            near(px[x, y], colour, 20)
            for y in range(int(height * 0.78), height)
            for x in range(0, width)
        )

    shown = readings[-14 * 288 :]
    if any(r.mg_dl > 185 for r in shown):
        assert shows(rgb(COLOURS["high"])), "the daily profiles show no time above 180"
    if any(r.mg_dl < 65 for r in shown):
        assert shows(rgb(COLOURS["low"])), "the daily profiles show no time below 70"
    if all(r.mg_dl >= 70 for r in shown):
        assert not shows(rgb(COLOURS["low"])), "the daily profiles show a low that is not there"


def page_of(readings: list[Reading], zone: tzinfo, unit: str = "mg/dL", size: str = "a4"):  # type: ignore[no-untyped-def]
    start = datetime_to_us(datetime(2024, 1, 1, tzinfo=zone))
    end = datetime_to_us(datetime(2024, 1, 15, tzinfo=zone))
    summary = summarize(readings, start, end)
    wear = days_of_wear(summary, [r.time_us for r in readings])
    return agp_page(agp_data("p1", "Ada Lovelace", summary, readings, wear, zone), unit, size)


@pytest.mark.parametrize("subject", ["child002"])  # adolescent003: tests/server/test_agp.py
def test_svg_and_pdf_show_the_profile(subject: str) -> None:
    readings = simglucose(subject)
    page = page_of(readings, UTC)
    svg, pdf = render_svg(page), render_pdf(page)
    for image in (raster_svg(svg), raster_pdf(pdf)):
        assert image.size == (842 * SCALE, 595 * SCALE)
        check_page(image, readings, UTC)


def test_svg_is_accessible_and_labelled() -> None:
    readings = simglucose()
    svg = render_svg(page_of(readings, UTC))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "agp-title agp-desc"
    title, desc = root.find(f"{ns}title"), root.find(f"{ns}desc")
    assert title is not None and "Ada Lovelace" in (title.text or "")
    tir = round(time_in_range(readings))
    assert desc is not None and f"target {tir}%" in (desc.text or "")
    texts = [t.text for t in root.iter(f"{ns}text")]
    for label in ("TIME IN RANGES", "AMBULATORY GLUCOSE PROFILE (AGP)", "DAILY GLUCOSE PROFILES"):
        assert label in texts
    assert f"{tir}%" in texts
    labels = {g.get("aria-label") for g in root.iter(f"{ns}g")}
    assert "Median (50th percentile)" in labels and "5th to 95th percentile band" in labels
    assert len([v for v in labels if v and v.startswith("Daily profile ")]) == 14


def test_pdf_text_and_page_size() -> None:
    readings = simglucose()
    values = [r.mg_dl for r in readings]
    for size, box in (("a4", (842, 595)), ("letter", (792, 612))):
        pdf = render_pdf(page_of(readings, UTC, "mmol/L", size))
        assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
        document = pypdfium2.PdfDocument(pdf)
        page = document[0]
        assert (round(page.get_width()), round(page.get_height())) == box
        text = page.get_textpage().get_text_range()
        document.close()
        assert "AGP Report: Continuous Glucose Monitoring" in text
        assert f"{statistics.fmean(values) / 18.0156:.1f} mmol/L" in text
        assert "Target range 3.9-10.0 mmol/L" in text
        assert f"{3.31 + 0.02392 * statistics.fmean(values):.1f}%" in text


def test_non_ascii_names_and_hostile_text() -> None:
    readings = simglucose()
    start = datetime_to_us(datetime(2024, 1, 1, tzinfo=UTC))
    summary = summarize(readings, start, start + 14 * 86_400_000_000)
    data = agp_data("x", "Zoë <b>&</b> (Ω) \\", summary, readings, 14, UTC)
    page = agp_page(data)
    root = ET.fromstring(render_svg(page))  # well-formed despite <, &
    assert "Zoë <b>&</b> (Ω) \\" in (root.find("{http://www.w3.org/2000/svg}title").text or "")  # type: ignore[union-attr]
    document = pypdfium2.PdfDocument(render_pdf(page))
    text = document[0].get_textpage().get_text_range()
    document.close()
    assert "Zoë <b>&</b> (?) \\" in text  # Ω is outside WinAnsi


def test_long_period_adds_pages_of_daily_profiles() -> None:
    # 40 days (the simulated 14 days, repeated) in Berlin: page 1 shows the last 14 days,
    # then every local day (41: the period starts at a UTC midnight) on 35-a-page pages.
    base = simglucose()
    day = 86_400_000_000
    readings = [
        Reading(r.time_us + k * 14 * day, r.mg_dl)
        for k in range(3)
        for r in base
        if r.time_us < base[0].time_us + 14 * day
    ][: 40 * 288]
    start = readings[0].time_us
    summary = summarize(readings, start, start + 40 * day)
    zone = ZoneInfo("Europe/Berlin")
    pages = agp_pages(agp_data("p", None, summary, readings, 40, zone), "mg/dL", "letter")
    local_days = {r.time.astimezone(zone).date() for r in readings}
    assert len(local_days) == 41
    assert len(pages) == 1 + 2  # 41 days at 35 a page
    root = ET.fromstring(render_svg(pages))
    assert root.get("viewBox") == f"0 0 792 {612 * 3}"
    labels = [g.get("aria-label") or "" for g in root.iter("{http://www.w3.org/2000/svg}g")]
    daily = [v.removeprefix("Daily profile ") for v in labels if v.startswith("Daily profile ")]
    assert len(daily) == 14 + 41
    assert sorted(set(daily)) == sorted(d.isoformat() for d in local_days)
    document = pypdfium2.PdfDocument(render_pdf(pages))
    assert len(document) == 3
    assert "Page 3 of 3" in document[2].get_textpage().get_text_range()
    document.close()
