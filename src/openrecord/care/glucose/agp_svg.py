"""The AGP drawing as SVG for the web: static, no script, readable by assistive technology.

Several pages (a report longer than 14 days has pages of daily profiles) are stacked
one below the other in one document.

The root is `role="img"` labelled by its `<title>` and described by its `<desc>` (the
key metrics in words); every panel is a `<g>` with an `aria-label`, and all labels are
real `<text>`. Coordinates are PDF points (1/72 in); the intrinsic size is one CSS pixel per point.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from openrecord.care.glucose.agp_shapes import Group, Page, Path, Rect, Shape, Text

__all__ = ["render_svg"]

_FONT = "Helvetica, Arial, 'Liberation Sans', sans-serif"


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _shape(shape: Shape, out: list[str]) -> None:
    if isinstance(shape, Group):
        out.append(f"<g aria-label={quoteattr(shape.label)}>")
        for item in shape.items:
            _shape(item, out)
        out.append("</g>")
    elif isinstance(shape, Rect):
        fill = shape.fill or "none"
        stroke = (
            f' stroke="{shape.stroke}" stroke-width="{_n(shape.width)}"' if shape.stroke else ""
        )
        out.append(
            f'<rect x="{_n(shape.x)}" y="{_n(shape.y)}" width="{_n(shape.w)}"'
            f' height="{_n(shape.h)}" fill="{fill}"{stroke}/>'
        )
    elif isinstance(shape, Path):
        if len(shape.points) < 2:
            return
        points = " ".join([f"{x:.1f},{y:.1f}" for x, y in shape.points])
        tag = "polygon" if shape.closed else "polyline"
        attrs = f'fill="{shape.fill or "none"}"'
        if shape.stroke:
            attrs += f' stroke="{shape.stroke}" stroke-width="{_n(shape.width)}"'
            attrs += ' stroke-linejoin="round"'
            if shape.dash:
                attrs += f' stroke-dasharray="{" ".join(_n(d) for d in shape.dash)}"'
        out.append(f'<{tag} points="{points}" {attrs}/>')
    elif isinstance(shape, Text):
        weight = ' font-weight="bold"' if shape.bold else ""
        anchor = f' text-anchor="{shape.anchor}"' if shape.anchor != "start" else ""
        out.append(
            f'<text x="{_n(shape.x)}" y="{_n(shape.y)}" font-size="{_n(shape.size)}"'
            f' fill="{shape.fill}"{weight}{anchor}>{escape(shape.text)}</text>'
        )


def render_svg(pages: Page | Sequence[Page]) -> bytes:
    """The pages as one standalone SVG document (UTF-8), one below the other."""
    pages = [pages] if isinstance(pages, Page) else list(pages)
    first = pages[0]
    w = _n(first.width)
    h = _n(sum(page.height for page in pages))
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}"'
        f' viewBox="0 0 {w} {h}" role="img" aria-labelledby="agp-title agp-desc"'
        f' font-family="{_FONT}">',
        f'<title id="agp-title">{escape(first.title)}</title>',
        f'<desc id="agp-desc">{escape(first.description)}</desc>',
        f'<rect width="{w}" height="{h}" fill="#FFFFFF"/>',
    ]
    top = 0.0
    for number, page in enumerate(pages, start=1):
        label = quoteattr(f"Page {number} of {len(pages)}")
        out.append(f'<g aria-label={label} transform="translate(0 {_n(top)})">')
        if number > 1:
            out.append(f'<line x1="0" y1="0" x2="{w}" y2="0" stroke="#999999"/>')
        for shape in page.items:
            _shape(shape, out)
        out.append("</g>")
        top += page.height
    out.append("</svg>")
    return ("\n".join(out) + "\n").encode("utf-8")
