"""The one score document: an immutable version of a piece, with derived views computed once.

Every edit (import, generation, inpainting, continuation) makes a new `ScoreDocument`; undo/redo is a
list of them. The canonical content is MusicXML text; the music21 score, the measure grid and the
NotaGen texts are derived on first use and cached on the instance.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from functools import cached_property

import music21

from engine.errors import ScoreError, describe
from engine.score.grid import MeasureGrid, MeasureLayout, measure_grid_of, measure_layout


@dataclass(frozen=True, eq=False)
class ScoreDocument:
    """One version of a score. `musicxml` is the canonical text; everything else derives from it."""

    musicxml: str
    title: str = ""

    @classmethod
    def with_grid(cls, musicxml: str, title: str, grid: MeasureGrid) -> ScoreDocument:
        """A document whose `grid` was built from this very MusicXML elsewhere (the import worker,
        `engine.score.sandbox.read_all`), so that this process parses it only when it edits the score."""
        document = cls(musicxml, title)
        document.__dict__["grid"] = grid  # what `cached_property` stores
        return document

    @cached_property
    def digest(self) -> str:
        """A content hash: equal documents share caches (engraving, audio, exports)."""
        return hashlib.sha256(self.musicxml.encode("utf-8")).hexdigest()[:16]

    @cached_property
    def _parsed(self) -> music21.stream.Score:
        try:
            parsed = music21.converter.parseData(self.musicxml, format="musicxml", forceSource=True)
        except Exception as exc:  # music21 raises many exception types for bad input
            raise ScoreError(f"the MusicXML could not be parsed: {describe(exc)}") from exc
        if not isinstance(parsed, music21.stream.Score):
            raise ScoreError("the MusicXML holds no score")
        return parsed

    def score(self) -> music21.stream.Score:
        """A private copy of the music21 score, safe to modify (the document itself never changes)."""
        return copy.deepcopy(self._parsed)

    def excerpt(self, first: int, last: int) -> music21.stream.Score:
        """A private copy of measure columns `first`..`last` (0-based, inclusive) of every part, its
        first measures stating the clef, key and metre in force, staves grouped as in the score.
        Copying and writing a window is what keeps inpainting a long score fast (music21's
        `Score.measures` searches the whole score for each part's context: 20 s on a long quartet)."""
        window = music21.stream.Score()
        clones = {}
        for part in self._parsed.parts:
            clone = part.cloneEmpty(derivationMethod="excerpt")
            measures = list(part.getElementsByClass(music21.stream.Measure))
            copies = [copy.deepcopy(measure) for measure in measures[first:last + 1]]
            if copies:
                for element in _in_force(measures[:first + 1]):
                    copies[0].insert(0, copy.deepcopy(element))
            for measure in copies:
                clone.append(measure)
            window.insert(0, clone)
            clones[id(part)] = clone
        for group in self._parsed.getElementsByClass(music21.layout.StaffGroup):
            members = [clones[id(staff)] for staff in group.getSpannedElements() if id(staff) in clones]
            if members:
                window.insert(0, music21.layout.StaffGroup(members, symbol=group.symbol, barTogether=group.barTogether))
        return window

    @cached_property
    def layout(self) -> MeasureLayout:
        """Rows, measures and columns of the parsed score: what `grid` and the measure model read.
        Its music21 objects are the document's own: read them, never modify them."""
        return measure_layout(self._parsed)

    @cached_property
    def grid(self) -> MeasureGrid:
        """The parts x measures view whose cells measure locks address."""
        return measure_grid_of(self.layout)

    @cached_property
    def abc(self) -> str:
        """Standard ABC as NotaGen's pipeline writes it (xml2abc -d 8 -c 6 -x)."""
        from engine.score.notagen_abc import xml_to_abc

        return xml_to_abc(self.musicxml)

    @cached_property
    def interleaved_abc(self) -> str:
        """NotaGen's interleaved ABC (one bar per line, `[V:n]` voices): what the models read."""
        from engine.score.notagen_abc import clean_abc, interleave

        return interleave(clean_abc(self.abc))

    @property
    def n_parts(self) -> int:
        return len(self.grid.parts)

    @property
    def n_measures(self) -> int:
        return len(self.grid.columns)



def export_abc(musicxml: str, interleaved: bool = False) -> str:
    """The standard (or NotaGen's interleaved) ABC of a document's MusicXML: what a render worker runs for
    an ABC export (`engine.service.Composer.export`), so that the server never writes it itself."""
    document = ScoreDocument(musicxml)
    return document.interleaved_abc if interleaved else document.abc

_CONTEXT = (music21.clef.Clef, music21.key.KeySignature, music21.meter.TimeSignature)


def _in_force(measures) -> list:
    """The clef, key and time signature in force at the start of the last of `measures` that it does
    not state itself at its start (the latest ones before it)."""
    last = measures[-1]
    found = {kind for kind in _CONTEXT if last.getElementsByClass(kind).getElementsByOffset(0)}
    elements = []
    for measure in reversed(measures[:-1]):
        for kind in _CONTEXT:
            if kind not in found:
                stated = list(measure.recurse().getElementsByClass(kind))
                if stated:
                    elements.append(stated[-1])
                    found.add(kind)
        if len(found) == len(_CONTEXT):
            break
    return elements
