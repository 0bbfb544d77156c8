"""Repairs to the official xml2abc where its ABC does not say what the MusicXML says.

`engine.score.notagen_abc` reproduces the official NotaGen text byte for byte; these repairs change it
only where that text is wrong (abc2xml reads back other notes, or NotaGen's own checks refuse it), so a
score the official pipeline writes correctly gives exactly the official text. Each repair names the
failure it fixes; `python -m training.roundtrip` measures what is still lost.
"""
from __future__ import annotations

import re

from abctoolkit import xml2abc as _xml2abc

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def plain_whitespace(abc: str) -> str:
    """xml2abc copies the text of lyrics and directions verbatim, tabs included; NotaGen refuses control
    characters in what it reads back (`engine.notagen.finish.check_generated_bars`), and in ABC a tab is
    only a space. Every control character but the newline becomes a space."""
    return _CONTROL.sub(" ", abc)


# ---------------------------------------------------------------------------------------------
# A tie from another voice: xml2abc leaves out the accidental of the tied-to note, since in ABC a tie
# carries the accidental; but abc2xml carries a tie only into the next note or chord of the same voice
# (it turns any other into a slur), so the tied-to note came back with the key's pitch: a G-flat tied from
# voice 5 into voice 3's chord (OpenScore Lieder, Lehmann, "Clasp mine closer", m. 66), a C-sharp tied from
# the third-last note of a bar into the next bar's chord (Jaell, "Les troncons du serpent", m. 51), a tie
# that starts nowhere in the score (a first bar, the bar after a repeat sign). The tied-to note keeps its
# accidental unless abc2xml will carry its tie.
# ---------------------------------------------------------------------------------------------

_original_ntAbc = getattr(_xml2abc.Parser.ntAbc, "original", _xml2abc.Parser.ntAbc)


def _ntAbc(parser, ptc, oct, note, v, ntrec, isTab):  # noqa: N802 - xml2abc's name and signature
    ties = note.findall("tie") + note.findall("notations/tied")
    types = [element.get("type") for element in ties]
    # per (part, voice): the (step, octave) ties started by the voice's previous note or chord, and by this one
    carried, started = parser.__dict__.setdefault("_ties", {}).setdefault((parser.msr.ixp, v), (set(), set()))
    if note.find("chord") is None and note.find("grace") is None:  # a new note or chord of the voice
        carried.clear()
        carried.update(started)
        started.clear()
    stops = [element for element in ties if element.get("type") == "stop"] if (ptc, oct) not in carried else []
    # abc2xml gives a note tied within its voice the tie's alteration and remembers no accidental written
    # on it, so neither may xml2abc: a later B in the bar then gets its own natural sign.
    alterations = dict(parser.curalts) if "stop" in types and not stops else None
    for element in stops:  # xml2abc then writes the accidental as for an untied note
        element.set("type", "stop-not-carried")
    try:
        abc = _original_ntAbc(parser, ptc, oct, note, v, ntrec, isTab)
    finally:
        for element in stops:
            element.set("type", "stop")
    if alterations is not None:
        parser.curalts = alterations
    if "start" in types:
        started.add((ptc, oct))
    return abc


_ntAbc.original = _original_ntAbc  # type: ignore[attr-defined]
_xml2abc.Parser.ntAbc = _ntAbc


# ---------------------------------------------------------------------------------------------
# Repairs of the MusicXML tree xml2abc reads, made where it first gets the tree (`Parser.mkTitle`).
# ---------------------------------------------------------------------------------------------

#: The types xml2abc's direction code knows; any other valid one (MusicXML's pedal `discontinue`,
#: `resume`, `change`, `sostenuto`, a wedge's or octave shift's `continue`) made it raise "wrong direction
#: type" and refuse the whole score (OpenScore Lieder, Chaminade, "Plaintes d'amour").
_DIRECTION_TYPES = {"wedge": {"crescendo", "diminuendo", "stop"}, "octave-shift": {"up", "down", "stop"},
                    "pedal": {"start", "stop"}}
_PEDAL_TYPES = {"discontinue": "stop", "resume": "start"}


def plain_direction_types(root) -> None:
    """A pedal that is discontinued or resumed stops or starts; other marks xml2abc cannot write are left
    out (they change no note)."""
    for direction_type in root.iter("direction-type"):
        for tag, known in _DIRECTION_TYPES.items():
            for mark in direction_type.findall(tag):
                kind = mark.get("type", "")
                if kind in known:
                    continue
                if tag == "pedal" and kind in _PEDAL_TYPES:
                    mark.set("type", _PEDAL_TYPES[kind])
                else:
                    direction_type.remove(mark)


def merged_forwards(root) -> None:
    """Adjacent `<forward>`s of one voice become one. xml2abc drops a forward shorter than a 1/64 note as
    a MuseScore bug, but MuseScore writes a long gap as forwards of falling dotted lengths: a gap of 10/3
    quarters (768 divisions a quarter) lost its last 64 divisions and the triplet note after it moved
    (OpenScore Lieder, Brahms, Op. 32 No. 2, bar 14)."""
    for measure in root.iter("measure"):
        previous = None
        for element in list(measure):
            if element.tag != "forward":
                previous = None
                continue
            if previous is not None and _voice_and_staff(previous) == _voice_and_staff(element):
                duration = previous.find("duration")
                duration.text = str(int(duration.text) + int(element.findtext("duration")))
                measure.remove(element)
            else:
                previous = element


def _voice_and_staff(forward) -> tuple:
    return forward.findtext("voice"), forward.findtext("staff")


_original_mkTitle = getattr(_xml2abc.Parser.mkTitle, "original", _xml2abc.Parser.mkTitle)


def _mkTitle(parser, tree):  # noqa: N802 - xml2abc's name and signature
    plain_direction_types(tree.getroot())
    merged_forwards(tree.getroot())
    return _original_mkTitle(parser, tree)


_mkTitle.original = _original_mkTitle  # type: ignore[attr-defined]
_xml2abc.Parser.mkTitle = _mkTitle
