"""The AGP drawing as a PDF (ISO 32000-1), written by hand: the AGP page, then any
pages of daily profiles.

The page needs only filled and stroked paths, dashes and text, so a small writer does
it without a dependency: one content stream (Flate-compressed with zlib), the standard
Type 1 fonts Helvetica and Helvetica-Bold (every reader has them, nothing is embedded)
in WinAnsiEncoding, and the document title in the Info dictionary. Page coordinates
have their origin at the bottom left, so y is flipped here.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from openrecord.care.glucose.agp_shapes import Group, Page, Path, Rect, Shape, Text, text_width

__all__ = ["render_pdf"]


def _n(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return f"{_n(r)} {_n(g)} {_n(b)}"


def _string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252); characters outside it become '?'."""
    raw = text.encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _shape(shape: Shape, height: float, out: list[bytes]) -> None:
    if isinstance(shape, Group):
        for item in shape.items:
            _shape(item, height, out)
        return
    if isinstance(shape, Rect):
        box = f"{_n(shape.x)} {_n(height - shape.y - shape.h)} {_n(shape.w)} {_n(shape.h)} re"
        ops = []
        if shape.fill:
            ops.append(f"{_colour(shape.fill)} rg")
        if shape.stroke:
            ops.append(f"{_colour(shape.stroke)} RG {_n(shape.width)} w [] 0 d")
        paint = "B" if shape.fill and shape.stroke else "f" if shape.fill else "S"
        out.append(f"{' '.join(ops)} {box} {paint}".encode())
        return
    if isinstance(shape, Path):
        if len(shape.points) < 2 or not (shape.fill or shape.stroke):
            return
        ops = []
        if shape.fill:
            ops.append(f"{_colour(shape.fill)} rg")
        if shape.stroke:
            dash = " ".join(_n(d) for d in shape.dash)
            ops.append(f"{_colour(shape.stroke)} RG {_n(shape.width)} w [{dash}] 0 d")
        (x0, y0), *rest = shape.points
        ops.append(f"{x0:.1f} {height - y0:.1f} m")
        ops.extend([f"{x:.1f} {height - y:.1f} l" for x, y in rest])
        if shape.closed:
            ops.append("h")
        ops.append("B" if shape.fill and shape.stroke else "f" if shape.fill else "S")
        out.append(" ".join(ops).encode())
        return
    assert isinstance(shape, Text)
    x = shape.x
    if shape.anchor != "start":
        width = text_width(shape.text, shape.size, shape.bold)
        x -= width if shape.anchor == "end" else width / 2
    font = "/F2" if shape.bold else "/F1"
    out.append(
        f"BT {_colour(shape.fill)} rg {font} {_n(shape.size)} Tf"
        f" {_n(x)} {_n(height - shape.y)} Td ".encode()
        + _string(shape.text)
        + b" Tj ET"
    )


def render_pdf(pages: Page | Sequence[Page]) -> bytes:
    """The pages as a PDF document (the renderers' drawing, same layout)."""
    pages = [pages] if isinstance(pages, Page) else list(pages)
    count = len(pages)
    # Objects: 1 catalog, 2 page tree, 3-4 fonts, 5 info, then a page and its content each.
    kids = " ".join(f"{6 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Lang (en) >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title "
        + _string(pages[0].title)
        + b" /Subject "
        + _string(pages[0].description)
        + b" /Producer (openrecord) >>",
    ]
    for i, page in enumerate(pages):
        content: list[bytes] = [b"1 J 1 j"]  # round caps and joins, as the SVG
        for shape in page.items:
            _shape(shape, page.height, content)
        stream = zlib.compress(b"\n".join(content), 1)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_n(page.width)} {_n(page.height)}]"
            f" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {7 + 2 * i} 0 R >>".encode()
        )
        objects.append(
            f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode()
            + stream
            + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 5 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)
