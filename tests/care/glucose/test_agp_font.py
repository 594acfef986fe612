"""The Helvetica widths the AGP PDF lays text out with (`_generated/agp_font.py`).

- The shipped module is exactly what `scripts/compile_agp_font.py` writes from the
  Liberation Sans fonts (Debian `fonts-liberation`): the script is run for real, into a
  temporary file. Without the fonts the test skips — under `CI=true` it fails.
- Independently of the fonts and the script, the printable ASCII widths equal Adobe's
  Core 14 AFM files (Helvetica.afm, Helvetica-Bold.afm, 1997, `WX` values; WinAnsi 39
  is `quotesingle` and 96 `grave`), which is what PDF viewers use for the standard fonts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from openrecord.care.glucose._generated import agp_font
from openrecord.care.glucose.agp_shapes import text_width

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "compile_agp_font.py"
SHIPPED = ROOT / "src" / "openrecord" / "care" / "glucose" / "_generated" / "agp_font.py"
FONTS = Path("/usr/share/fonts/truetype/liberation")
REGULAR_TTF = FONTS / "LiberationSans-Regular.ttf"
BOLD_TTF = FONTS / "LiberationSans-Bold.ttf"

# Adobe Helvetica.afm / Helvetica-Bold.afm, codes 32-126 in WinAnsi order.
AFM_REGULAR = (
    [278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278]
    + [556] * 10
    + [278, 278, 584, 584, 584, 556, 1015]
    + [667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833]  # A-M
    + [722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611]  # N-Z
    + [278, 278, 278, 469, 556, 333]
    + [556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833]  # a-m
    + [556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500]  # n-z
    + [334, 260, 334, 584]
)
AFM_BOLD = (
    [278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278]
    + [556] * 10
    + [333, 333, 584, 584, 584, 611, 975]
    + [722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833]  # A-M
    + [722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611]  # N-Z
    + [333, 278, 333, 584, 556, 333]
    + [556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889]  # a-m
    + [611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500]  # n-z
    + [389, 280, 389, 584]
)


def compile_font(regular: Path, bold: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run the build script as a user would."""
    command = [sys.executable, str(SCRIPT), "--regular", str(regular), "--bold", str(bold)]
    return subprocess.run([*command, "--output", str(out)], capture_output=True, text=True)


def need_fonts() -> None:
    """Skip without Liberation Sans, except under CI, where it is a failure."""
    missing = [str(p) for p in (REGULAR_TTF, BOLD_TTF) if not p.exists()]
    if not missing:
        return
    reason = f"Liberation Sans not found ({', '.join(missing)}; apt-get install fonts-liberation)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (required under CI=true)")
    pytest.skip(reason)


def test_shipped_table_is_what_the_script_measures(tmp_path: Path) -> None:
    need_fonts()
    out = tmp_path / "agp_font.py"
    run = compile_font(REGULAR_TTF, BOLD_TTF, out)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == SHIPPED.read_text()


def test_script_refuses_a_file_that_is_not_a_font(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-font.ttf"
    bogus.write_bytes(b"%PDF-1.4\n" + bytes(64))
    run = compile_font(bogus, bogus, tmp_path / "out.py")
    assert run.returncode != 0
    assert "not a TrueType font" in run.stderr
    assert not (tmp_path / "out.py").exists()


def test_ascii_widths_are_adobe_helvetica() -> None:
    assert agp_font.FIRST_CODE == 32
    assert list(agp_font.REGULAR[:95]) == AFM_REGULAR
    assert list(agp_font.BOLD[:95]) == AFM_BOLD


def test_table_covers_cp1252_and_marks_its_undefined_codes() -> None:
    assert len(agp_font.REGULAR) == len(agp_font.BOLD) == 256 - 32
    # cp1252 leaves 0x81, 0x8D, 0x8F, 0x90 and 0x9D undefined; every other code has a width.
    for table in (agp_font.REGULAR, agp_font.BOLD):
        zero = [code for code, w in enumerate(table, start=32) if w == 0]
        assert zero == [0x81, 0x8D, 0x8F, 0x90, 0x9D]
    # A few beyond ASCII, from the AFMs: Euro, eacute, degree, emdash, bullet.
    for char, regular, bold in (("€", 556, 556), ("é", 556, 556), ("°", 400, 400)):
        code = char.encode("cp1252")[0] - 32
        assert (agp_font.REGULAR[code], agp_font.BOLD[code]) == (regular, bold)
    for char, width in (("—", 1000), ("•", 350)):
        code = char.encode("cp1252")[0] - 32
        assert agp_font.REGULAR[code] == agp_font.BOLD[code] == width


def test_text_width_sums_the_advances() -> None:
    # "Target": T 611, a 556, r 333, g 556, e 556, t 278 (regular); bold 611 556 389 611 556 333.
    assert text_width("Target", 10) == pytest.approx(28.90)
    assert text_width("Target", 10, bold=True) == pytest.approx(30.56)
    # A character outside cp1252 is drawn as "?" (556 regular).
    assert text_width("Ω", 10) == pytest.approx(5.56)
