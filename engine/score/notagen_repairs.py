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
# carries the accidental; but abc2xml carries it only within one voice, so a G-flat tied from voice 5
# into voice 3's chord came back as G natural (OpenScore Lieder, Lehmann, "Clasp mine closer", m. 66), as
# did a tied-to note whose tie starts nowhere in the score (a first bar, the bar after a repeat sign).
# The tied-to note keeps its accidental unless its tie started in the same voice.
# ---------------------------------------------------------------------------------------------

_original_ntAbc = getattr(_xml2abc.Parser.ntAbc, "original", _xml2abc.Parser.ntAbc)


def _ntAbc(parser, ptc, oct, note, v, ntrec, isTab):  # noqa: N802 - xml2abc's name and signature
    ties = note.findall("tie") + note.findall("notations/tied")
    types = [element.get("type") for element in ties]
    started = parser.__dict__.setdefault("_tie_voices", {})  # (part, step, octave) -> voice of the open tie
    key = (parser.msr.ixp, ptc, oct)
    stops = [element for element in ties if element.get("type") == "stop"] if started.get(key) != v else []
    for element in stops:  # xml2abc then writes the accidental as for an untied note
        element.set("type", "stop-from-another-voice")
    try:
        abc = _original_ntAbc(parser, ptc, oct, note, v, ntrec, isTab)
    finally:
        for element in stops:
            element.set("type", "stop")
    if "start" in types:
        started[key] = v
    elif "stop" in types:
        started.pop(key, None)
    return abc


_ntAbc.original = _original_ntAbc  # type: ignore[attr-defined]
_xml2abc.Parser.ntAbc = _ntAbc
