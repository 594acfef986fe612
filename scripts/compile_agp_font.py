#!/usr/bin/env python3
"""Measure the Helvetica advance widths the AGP PDF lays its text out with.

Input: Liberation Sans Regular and Bold (Debian package `fonts-liberation`), whose
advance widths are made to match Arial's, which match Helvetica's — so a string measured
with them is as wide in any viewer's Helvetica or substitute.
Output: `src/openrecord/care/glucose/_generated/agp_font.py`, read by
`openrecord.care.glucose.agp_draw` to centre and right-align text in the PDF.

    python scripts/compile_agp_font.py [--regular TTF] [--bold TTF] [--output PY]

(defaults: /usr/share/fonts/truetype/liberation/LiberationSans-{Regular,Bold}.ttf).

For each WinAnsi (cp1252) code 32-255 — the encoding the PDF's standard fonts use — the
character's glyph is looked up in the font's Unicode `cmap` (a character the font lacks
gets glyph 0, `.notdef`), its advance read from `hmtx` and scaled from `head.unitsPerEm`
to 1/1000 em, rounded half to even (Python's `round`). Codes cp1252 leaves undefined are 0.
The TTF tables are read with `struct`, so the build needs nothing beyond the standard
library. Run it again whenever the fonts change; the output is deterministic.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "openrecord" / "care" / "glucose" / "_generated" / "agp_font.py"
FONTS = Path("/usr/share/fonts/truetype/liberation")
REGULAR_TTF = FONTS / "LiberationSans-Regular.ttf"
BOLD_TTF = FONTS / "LiberationSans-Bold.ttf"
FIRST_CODE, LAST_CODE = 32, 255


class FontError(ValueError):
    """The file is not a TrueType font this script can read."""


def _tables(data: bytes) -> dict[bytes, bytes]:
    """The font's tables by tag, from the offset table at the start of the file."""
    if len(data) < 12:
        raise FontError("too short for a TrueType offset table")
    version, count = struct.unpack_from(">IH", data, 0)
    if version not in (0x00010000, 0x74727565):  # 1.0 or 'true'; 'OTTO' (CFF) has no hmtx here
        raise FontError(f"not a TrueType font (sfnt version {version:#010x})")
    tables = {}
    for i in range(count):
        tag, _checksum, offset, length = struct.unpack_from(">4sIII", data, 12 + 16 * i)
        if offset + length > len(data):
            raise FontError(f"table {tag!r} runs past the end of the file")
        tables[tag] = data[offset : offset + length]
    for tag in (b"head", b"hhea", b"hmtx", b"cmap"):
        if tag not in tables:
            raise FontError(f"no {tag.decode()} table")
    return tables


def _cmap_format4(sub: bytes) -> dict[int, int]:
    """Segment mapping to delta values: the BMP subtable every Windows font carries."""
    seg_x2 = struct.unpack_from(">H", sub, 6)[0]
    segs = seg_x2 // 2
    ends = struct.unpack_from(f">{segs}H", sub, 14)
    starts = struct.unpack_from(f">{segs}H", sub, 16 + seg_x2)
    deltas = struct.unpack_from(f">{segs}h", sub, 16 + 2 * seg_x2)
    ro_at = 16 + 3 * seg_x2
    range_offsets = struct.unpack_from(f">{segs}H", sub, ro_at)
    out: dict[int, int] = {}
    for i in range(segs):
        for code in range(starts[i], ends[i] + 1):
            if code == 0xFFFF:
                continue
            if range_offsets[i] == 0:
                glyph = (code + deltas[i]) & 0xFFFF
            else:
                # idRangeOffset counts bytes from its own slot in the array.
                at = ro_at + 2 * i + range_offsets[i] + 2 * (code - starts[i])
                glyph = struct.unpack_from(">H", sub, at)[0]
                if glyph:
                    glyph = (glyph + deltas[i]) & 0xFFFF
            if glyph:
                out[code] = glyph
    return out


def _cmap_format12(sub: bytes) -> dict[int, int]:
    """Segmented coverage: the full-Unicode subtable."""
    groups = struct.unpack_from(">I", sub, 12)[0]
    out: dict[int, int] = {}
    for i in range(groups):
        start, end, glyph = struct.unpack_from(">III", sub, 16 + 12 * i)
        for code in range(start, end + 1):
            out[code] = glyph + code - start
    return out


def _unicode_cmap(cmap: bytes) -> dict[int, int]:
    """Unicode code point -> glyph id, from the best Unicode subtable the font has."""
    _version, count = struct.unpack_from(">HH", cmap, 0)
    found: dict[tuple[int, int], tuple[int, bytes]] = {}
    for i in range(count):
        platform, encoding, offset = struct.unpack_from(">HHI", cmap, 4 + 8 * i)
        fmt = struct.unpack_from(">H", cmap, offset)[0]
        found[(platform, encoding)] = (fmt, cmap[offset:])
    # Windows full Unicode, Windows BMP, then the Unicode platform's.
    for key in ((3, 10), (3, 1), (0, 4), (0, 3), (0, 1), (0, 0)):
        if key in found:
            fmt, sub = found[key]
            if fmt == 12:
                return _cmap_format12(sub)
            if fmt == 4:
                return _cmap_format4(sub)
    raise FontError("no Unicode cmap subtable of format 4 or 12")


def measure(path: Path) -> tuple[int, ...]:
    """Advance widths (1/1000 em) of cp1252 codes FIRST_CODE..LAST_CODE; 0 where undefined."""
    tables = _tables(path.read_bytes())
    units_per_em = struct.unpack_from(">H", tables[b"head"], 18)[0]
    metrics = struct.unpack_from(">H", tables[b"hhea"], 34)[0]  # numberOfHMetrics
    advances = [struct.unpack_from(">H", tables[b"hmtx"], 4 * i)[0] for i in range(metrics)]
    cmap = _unicode_cmap(tables[b"cmap"])
    widths = []
    for code in range(FIRST_CODE, LAST_CODE + 1):
        try:
            char = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            widths.append(0)
            continue
        glyph = cmap.get(ord(char), 0)
        # Glyphs past numberOfHMetrics share the last advance.
        advance = advances[min(glyph, metrics - 1)]
        widths.append(round(advance * 1000 / units_per_em))
    return tuple(widths)


def render(tables: dict[str, tuple[int, ...]]) -> str:
    """The module's source, formatted as `ruff format` leaves it."""
    lines = [
        '"""Advance widths (1/1000 em) of the PDF standard fonts Helvetica and Helvetica-Bold for',
        "the WinAnsi (cp1252) codes 32-255, used to place centred and right-aligned text in the PDF.",
        "",
        "Generated by scripts/compile_agp_font.py: do not edit. Measured from Liberation Sans",
        "Regular/Bold, whose metrics are made to match Arial's, which match Helvetica's (so a",
        "string is as wide in any viewer's Helvetica substitute). 0 marks a code cp1252 leaves",
        "undefined.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        '__all__ = ["BOLD", "FIRST_CODE", "REGULAR"]',
        "",
        f"FIRST_CODE = {FIRST_CODE}",
    ]
    for name in ("REGULAR", "BOLD"):
        lines += ["", f"{name}: tuple[int, ...] = ("]
        lines += [f"    {w}," for w in tables[name]]
        lines.append(")")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--regular", type=Path, default=REGULAR_TTF, help="Liberation Sans Regular")
    ap.add_argument("--bold", type=Path, default=BOLD_TTF, help="Liberation Sans Bold")
    ap.add_argument("--output", type=Path, default=OUT, help="the module to write")
    args = ap.parse_args()
    tables = {}
    for name, path in (("REGULAR", args.regular), ("BOLD", args.bold)):
        try:
            tables[name] = measure(path)
        except (OSError, FontError, struct.error) as exc:
            ap.error(f"{path}: {exc}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(tables))
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(
        f"{len(tables['REGULAR'])} widths per style, codes {FIRST_CODE}-{LAST_CODE}, "
        f"from {args.regular.name}, {args.bold.name} -> {shown}"
    )


if __name__ == "__main__":
    main()
