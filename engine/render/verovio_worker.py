"""The verovio toolkit and the worker process it runs in.

Verovio is a C++ library: a bug in it on some score (a segfault in `_verovio.abi3.so` was seen under
`bench/load.py`) would end the whole app. So the toolkit lives in a process of its own that
`engine.render.engrave.Engraver` talks to over a pipe, with the memory cap of every worker
(`engine.score.sandbox`); a crash there ends only that process. This
module imports nothing heavy, so the worker starts in well under a second.

Verovio reads MusicXML (never multi-voice ABC, which it does not support). The worker creates its
toolkit in its main thread because a toolkit created in another thread may fail to find its fonts.
"""
from __future__ import annotations

import re
from pathlib import Path

import verovio

from engine.errors import ScoreError
from engine.score.sandbox import serve

RESOURCE_PATH = str(Path(verovio.__file__).resolve().parent / "data")

BASE_OPTIONS = {
    "svgAdditionalAttribute": ["measure@n", "staff@n"],
    "adjustPageHeight": True,
    "breaks": "auto",
    "header": "none",
    "footer": "none",
    "mnumInterval": 1,
    "svgViewBox": True,
    # Verovio spaces lyrics by Times' metrics but names the font only ("Times, serif"): where Times is not
    # installed the browser draws a wider one and the words of a verse ran together ("binichein"). The
    # metric-compatible Liberation font goes into the SVG, so the text is drawn as it was spaced.
    "fontTextLiberation": True,
    # Verse lines were one font size apart: the descenders of one verse touched the next verse's letters.
    "lyricHeightFactor": 1.25,
}
_EMBEDDED_FONT = re.compile(r'<style type="text/css">\s*@font-face.*?</style>', re.S)


class Toolkit:
    """The verovio calls: each loads the score with fresh options, then renders. Called with a request
    (method name, arguments), as `engine.score.sandbox.serve` does."""

    def __init__(self) -> None:
        verovio.enableLog(verovio.LOG_OFF)  # its warnings go to stderr; failures are caught via loadData
        self._toolkit = verovio.toolkit(False)
        if not self._toolkit.setResourcePath(RESOURCE_PATH):
            raise RuntimeError(f"verovio could not load its resources from {RESOURCE_PATH}")

    def __call__(self, request: tuple[str, tuple]) -> object:
        name, args = request
        return getattr(self, name)(*args)

    def pages(self, musicxml: str, page_width: int, scale: int, page_height: int | None) -> tuple[str, ...]:
        # Paper pages get verovio's header: the title and composer the MusicXML names.
        fixed = {} if page_height is None else {"pageHeight": page_height, "adjustPageHeight": False, "header": "auto"}
        self._load(musicxml, {"pageWidth": page_width, "scale": scale, **fixed})
        pages = [self._toolkit.renderToSVG(n) for n in range(1, self._toolkit.getPageCount() + 1)]
        # The embedded font (390 kB) once: pages are shown together, and a page's style applies to all.
        return (pages[0], *(_EMBEDDED_FONT.sub("", page, count=1) for page in pages[1:])) if pages else ()

    def measure_onsets(self, musicxml: str, page_width: int, scale: int) -> tuple[tuple[float, str], ...]:
        self._load(musicxml, {"pageWidth": page_width, "scale": scale})
        timemap = self._toolkit.renderToTimemap({"includeMeasures": True, "includeRests": False})
        # a repeated passage plays again as "<id>-rend2", ...: highlight the engraved measure each time
        return tuple(
            (float(entry["tstamp"]), re.sub(r"-rend\d+$", "", entry["measureOn"]))
            for entry in timemap if "measureOn" in entry
        )

    def svg(self, musicxml: str, page_width: int, scale: int) -> str:
        self._load(musicxml, {"pageWidth": page_width, "scale": scale, "breaks": "encoded", "pageHeight": 60000})
        if self._toolkit.getPageCount() > 1:
            self._toolkit.setOptions({"breaks": "auto"})
            self._toolkit.redoLayout()
        return self._toolkit.renderToSVG(1)

    def midi_base64(self, musicxml: str) -> str:
        self._load(musicxml, {})
        return self._toolkit.renderToMIDI()

    def _load(self, musicxml: str, options: dict) -> None:
        """Load with fresh options; a failed load must stop here (rendering after it crashes verovio)."""
        self._toolkit.resetOptions()
        self._toolkit.setOptions({**BASE_OPTIONS, "xmlIdSeed": 1, **options})
        if not self._toolkit.loadData(musicxml):
            raise ScoreError("verovio could not read this score")


if __name__ == "__main__":
    serve(Toolkit)  # a request is (method name, arguments)
