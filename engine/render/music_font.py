"""Verovio's music font for CairoSVG: the SMuFL glyphs that an engraved page writes as text.

Verovio draws notes, clefs and dynamics as paths, but writes a few glyphs as text in its SMuFL font
(the note of a metronome mark, `♩ = 92`), naming the font "Leipzig" and embedding it in the SVG as a
WOFF2 `@font-face`. A browser uses the embedded font; CairoSVG cannot, so a printed page (PDF) or a PNG
showed an empty box instead of the note. `register_music_font` gives cairo the same font: the WOFF2
from verovio's own data (`Leipzig.css`, the file verovio embeds), written once as an OpenType file to a
cache folder and added to fontconfig's application fonts, which cairo's text drawing asks for a family.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import io
import logging
import os
import re
import tempfile
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import verovio

MUSIC_FONT = "Leipzig"
"""The family verovio's SVG names for its SMuFL text (its default music font)."""

log = logging.getLogger(__name__)


def font_file(folder: Path | None = None) -> Path:
    """The OpenType file of verovio's embedded music font, written to `folder` (default: the user's cache
    folder, else the temporary folder) unless it is already there; one file per verovio version."""
    if folder is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "notagen-composer"
        folder = cache if _writable(cache) else Path(tempfile.gettempdir())
    path = folder / f"{MUSIC_FONT}-verovio-{version('verovio')}.otf"
    if not path.is_file():
        from fontTools.ttLib import TTFont  # only where a page is drawn outside the browser

        css = (Path(verovio.__file__).parent / "data" / f"{MUSIC_FONT}.css").read_text(encoding="utf-8")
        woff2 = re.search(r"base64,([A-Za-z0-9+/=]+)", css)
        if woff2 is None:
            raise ValueError(f"verovio's {MUSIC_FONT}.css holds no embedded font")
        font = TTFont(io.BytesIO(base64.b64decode(woff2.group(1))))
        font.flavor = None  # WOFF2 -> plain OpenType, which fontconfig reads
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        font.save(partial)
        partial.replace(path)  # whole or absent, also with several processes at once
    return path


@lru_cache(maxsize=1)
def register_music_font() -> bool:
    """Add the music font to this process's fontconfig (once); False, with a warning, where it cannot be
    (no fontconfig library, no fontTools or brotli, an unreadable font): the glyphs are then drawn as boxes, as before."""
    try:
        library = ctypes.util.find_library("fontconfig") or "libfontconfig.so.1"
        fontconfig = ctypes.CDLL(library)
        fontconfig.FcConfigAppFontAddFile.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        if fontconfig.FcConfigAppFontAddFile(None, str(font_file()).encode()):
            return True
        reason = "fontconfig refused the file"
    except Exception as error:  # noqa: BLE001 - a font that cannot be installed must not stop the PDF
        reason = str(error)
    log.warning("metronome notes will print as boxes: verovio's music font could not be installed (%s)", reason)
    return False


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)
