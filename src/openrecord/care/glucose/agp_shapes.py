"""The drawing the AGP report is made of — rectangles, paths and text in page points, origin
at the top left, y downwards — kept apart from the report's layout (`agp_draw`) so the
SVG and PDF renderers depend only on these shapes and draw the same picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from openrecord.care.glucose._generated import agp_font

__all__ = [
    "COLOURS",
    "Anchor",
    "Group",
    "Page",
    "Path",
    "Rect",
    "Shape",
    "Text",
    "text_width",
]

COLOURS = {
    "very-high": "#F26D21",
    "high": "#FDB813",
    "target": "#1FA33A",
    "low": "#E31B23",
    "very-low": "#A3151B",
    "band-outer": "#B8CCE4",
    "band-inner": "#6E95C6",
    "band-edge": "#8FA9CC",
    "median": "#14365F",
    "header": "#3A3A3A",
    "grid": "#D0D0D0",
    "text": "#1A1A1A",
    "muted": "#666666",
    "trace": "#222222",
}

Anchor = Literal["start", "middle", "end"]


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str | None
    stroke: str | None = None
    width: float = 0.5


@dataclass(frozen=True, slots=True)
class Path:
    points: Sequence[tuple[float, float]]
    stroke: str | None = None
    fill: str | None = None
    width: float = 0.5
    closed: bool = False
    dash: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    size: float = 8.0
    bold: bool = False
    anchor: Anchor = "start"
    fill: str = COLOURS["text"]


@dataclass(frozen=True, slots=True)
class Group:
    """Shapes that belong together, with a label for assistive technology."""

    label: str
    items: list[Shape] = field(default_factory=list)


Shape = Rect | Path | Text | Group


@dataclass(frozen=True, slots=True)
class Page:
    width: float
    height: float
    title: str
    description: str
    items: list[Shape]


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width in points of `text` set in Helvetica (Bold) at `size`."""
    widths = agp_font.BOLD if bold else agp_font.REGULAR
    total = 0
    for byte in text.encode("cp1252", "replace"):
        at = byte - agp_font.FIRST_CODE
        total += widths[at] if 0 <= at < len(widths) else 0
    return total * size / 1000.0
