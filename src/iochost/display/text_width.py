"""How wide Phoebus draws a text, so a generated panel sizes labels and text widgets to fit.

The .bob files name Cantarell (forms) and Liberation Sans (the title); a Phoebus host lacking
a font gets JavaFX's fallback, DejaVu Sans, which is also the widest of the three, so every
text is measured with DejaVu Sans's glyph advances: what fits in DejaVu fits in the others.
JavaFX draws a font of size N (points in the .bob) N pixels to the em.

The advances are a table (``dejavu_widths``, font units per em), generated once from the font
files by ``python -m iochost.display.text_width --generate`` (needs fontTools, a tool of
generation only: the daemon reads the table, never a font); ``--check`` compares the table
with the installed fonts. A character outside printable ASCII counts as the widest glyph, so
a text is never measured narrower than it is drawn (kerning only narrows it further).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from iochost.display.dejavu_widths import BOLD, FIRST, REGULAR, UNITS_PER_EM

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = {"REGULAR": "DejaVuSans.ttf", "BOLD": "DejaVuSans-Bold.ttf"}
TABLE = Path(__file__).with_name("dejavu_widths.py")
# What "a typical character" of prose is: letters, digits and the space, equally often. A
# message sized by it fits its text unless the text is mostly capitals or wide glyphs.
TYPICAL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "


def _advances(bold: bool) -> tuple[int, ...]:
    return BOLD if bold else REGULAR


def text_width(text: str, size: float, bold: bool = False) -> int:
    """Pixels ``text`` takes in DejaVu Sans (Bold) of ``size``, rounded up; a multi-line
    text its longest line."""
    table = _advances(bold)
    widest = max(table)
    best = 0.0
    for line in text.split("\n"):
        units = sum(table[ord(c) - FIRST] if 0 <= ord(c) - FIRST < len(table) else widest for c in line)
        best = max(best, units * size / UNITS_PER_EM)
    return math.ceil(best)


def typical_width(characters: int, size: float, bold: bool = False) -> int:
    """Pixels of ``characters`` characters of ordinary text (the average of ``TYPICAL``): for a
    value whose text is not known, only its longest length."""
    table = _advances(bold)
    average = sum(table[ord(c) - FIRST] for c in TYPICAL) / len(TYPICAL)
    return math.ceil(characters * average * size / UNITS_PER_EM)


# -- generating and checking the table (fontTools, at development time only) -----------------
def read_font(path: Path) -> tuple[int, tuple[int, ...]]:
    """(units per em, advance of each printable ASCII character) of a TrueType font (fontTools:
    imported here only, not a dependency of the daemon)."""
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped, import-not-found, unused-ignore]

    font = TTFont(str(path))
    cmap, metrics = font.getBestCmap(), font["hmtx"]
    return font["head"].unitsPerEm, tuple(metrics[cmap[code]][0] for code in range(FIRST, 127))


def render_table(font_dir: Path = FONT_DIR) -> str:
    """The source of ``dejavu_widths.py`` for the fonts in ``font_dir``."""
    regular_em, regular = read_font(font_dir / FONT_FILES["REGULAR"])
    bold_em, bold = read_font(font_dir / FONT_FILES["BOLD"])
    if regular_em != bold_em:
        raise ValueError(f"units per em differ: {regular_em} and {bold_em}")

    def rows(values: tuple[int, ...]) -> str:
        return "".join("    " + ", ".join(str(v) for v in values[i:i + 16]) + ",\n" for i in range(0, len(values), 16))

    return (f'"""DejaVu Sans advance widths (font units) of the characters {FIRST}..126, generated from\n'
            f"{FONT_FILES['REGULAR']} and {FONT_FILES['BOLD']} by ``python -m iochost.display.text_width"
            ' --generate``:\ndo not edit."""\n\n'
            f"FIRST = {FIRST}\nUNITS_PER_EM = {regular_em}\nREGULAR = (\n{rows(regular)})\n"
            f"BOLD = (\n{rows(bold)})\n")


def main(argv: list[str] | None = None) -> int:
    """``--generate`` writes the table from the installed fonts; ``--check`` exits 1 when it
    differs from them."""
    parser = argparse.ArgumentParser(prog="python -m iochost.display.text_width", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--generate", action="store_true", help=f"write {TABLE.name} from the fonts")
    action.add_argument("--check", action="store_true", help=f"exit 1 if {TABLE.name} differs from the fonts")
    parser.add_argument("--font-dir", type=Path, default=FONT_DIR)
    args = parser.parse_args(argv)
    source = render_table(args.font_dir)
    if args.generate:
        TABLE.write_text(source)
        print(f"wrote {TABLE}")
        return 0
    if TABLE.read_text() != source:
        print(f"{TABLE} differs from the fonts in {args.font_dir}: run --generate", file=sys.stderr)
        return 1
    print(f"{TABLE.name} matches the fonts in {args.font_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
