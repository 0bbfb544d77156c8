"""Attributes in MusicXML text, for the code that edits a score's own text (splice, spanners).

XML lets an attribute's value stand in double or single quotes with spaces around `=`; real files use
both (music21's trecento corpus writes `<measure number='1'>`), so every pattern here reads either."""
from __future__ import annotations

import re

#: One attribute: name, quote, value.
_ATTRIBUTE = re.compile(r"""([\w:.-]+)\s*=\s*(["'])(.*?)\2""", re.S)


def value(name: str) -> str:
    """A pattern for the attribute `name` whose value is the named group `value`."""
    return rf"""\b{re.escape(name)}\s*=\s*(?P<quote>["'])(?P<value>.*?)(?P=quote)"""


def attributes(tag: str) -> dict[str, str]:
    """The attributes of one start tag's text, `{name: value}`."""
    return {name: found for name, _, found in _ATTRIBUTE.findall(tag)}


#: A `<measure>` start tag's number.
MEASURE_NUMBER = re.compile(r"<measure\b[^>]*?" + value("number"), re.S)
