"""PDF of engraved pages: each verovio SVG page drawn by CairoSVG onto one multipage cairo PDF.

CairoSVG writes one page per SVG, so its PDF surface is pointed at a shared cairo surface that is
resized and turned over for each page instead of owning a surface of its own.
"""
from __future__ import annotations

import io
import re
from collections.abc import Sequence
from xml.sax.saxutils import escape

import cairocffi
from cairosvg.parser import Tree
from cairosvg.surface import PDFSurface

from engine.errors import ScoreError
from engine.render.music_font import register_music_font

A4_LAYOUT = {"page_width": 2100, "page_height": 2970, "scale": 55}
"""Verovio's print layout: A4 pages in tenths of a millimetre, staves about 4 mm high."""
A4_WIDTH_MM = 210.0
#: Verovio spaces text by Times' widths and names its embedded copy "Liberation"; CairoSVG reads only the
#: first family and cannot use an embedded font, so the page's text is drawn with the installed Liberation
#: Serif (fonts-liberation, metric-compatible with Times), or lyrics set in a wider fallback run together.
_VEROVIO_TEXT_FONT = re.compile(r'font-family="Liberation, serif"')
PDF_TEXT_FONT = "Liberation Serif"


def with_title(musicxml: str, title: str) -> str:
    """`musicxml` naming `title` as its movement title, for the printed page's header, unless it already
    has a work or movement title (the title is the document's, kept beside its MusicXML)."""
    if not title or re.search(r"<(work-title|movement-title)>\s*\S", musicxml):
        return musicxml
    anchor = re.search(r"</work>|<movement-number>.*?</movement-number>|<score-partwise[^>]*>", musicxml, re.S)
    if anchor is None:
        return musicxml
    return f"{musicxml[: anchor.end()]}<movement-title>{escape(title)}</movement-title>{musicxml[anchor.end() :]}"


def with_header(musicxml: str, title: str) -> str:
    """`with_title`, and for a score whose MusicXML names its composer but has no credits (verovio prints
    only a title then), a title and a composer credit so that the printed first page carries both."""
    musicxml = with_title(musicxml, title)
    composer = re.search(r'<creator type="composer">\s*([^<]*?\S)\s*</creator>', musicxml)
    if "<credit" in musicxml or composer is None or "<part-list>" not in musicxml:
        return musicxml
    heading = re.search(r"<movement-title>\s*([^<]*?\S)\s*</movement-title>", musicxml) or re.search(
        r"<work-title>\s*([^<]*?\S)\s*</work-title>", musicxml)
    credits = "".join(
        f'<credit page="1"><credit-type>{kind}</credit-type><credit-words {place}>{text}</credit-words></credit>'
        for kind, place, text in (
            ("title", 'justify="center" valign="top" font-size="22"', heading.group(1) if heading else escape(title)),
            ("composer", 'justify="right" valign="bottom"', composer.group(1)),
        ))
    at = musicxml.index("<part-list>")
    return musicxml[:at] + credits + musicxml[at:]


class _PageSurface(PDFSurface):
    """Draws one SVG as the next page of a shared cairo PDF surface."""

    def __init__(self, tree: Tree, target: cairocffi.PDFSurface, dpi: float) -> None:
        self._target = target
        super().__init__(tree, None, dpi)

    def _create_surface(self, width: float, height: float):
        self._target.set_size(width, height)
        return self._target, width, height


def svg_pages_to_pdf(pages: Sequence[str], width_mm: float = A4_WIDTH_MM) -> bytes:
    """One PDF page per SVG page, each scaled to `width_mm` wide (verovio SVGs have only a viewBox)."""
    if not pages:
        raise ScoreError("there is no engraved page to write as PDF")
    register_music_font()  # the metronome marks' notes
    output = io.BytesIO()
    target = cairocffi.PDFSurface(output, 1, 1)
    for page in pages:
        page = _VEROVIO_TEXT_FONT.sub(f'font-family="{PDF_TEXT_FONT}, serif"', page)
        tree = Tree(bytestring=page.encode("utf-8"))
        width = float(tree.get("viewBox").split()[2])
        _PageSurface(tree, target, dpi=width * 25.4 / width_mm)
        target.show_page()
    target.finish()
    return output.getvalue()
