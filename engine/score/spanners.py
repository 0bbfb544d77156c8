"""Spanners (slurs, hairpins, ottava, pedal and other lines) at the edges of rewritten measures.

A spanner's start and stop are separate marks, often in different measures. When some measures are
rewritten, a spanner going from a kept measure into a rewritten one (or coming out of one) would keep
one end only, which readers stretch to the end of the part or drop. So after the splice, in each part:
marks left unmatched inside a run of rewritten measures are dropped (music21's reading of the marks
around the cleared notes, not the new music); a spanner of a run of kept measures that went on into
rewritten ones is closed by a stop at the run's last point (the voice's last note for a slur, the
end of the last measure for a line), one that came out of them is opened again at the run's first
point with a copy of its original start. Where that cannot be done (a slur would start and stop on one
note, glissandos, slides, trill lines) the kept mark is removed. Every kept measure changed is named
in a warning. Ties are not spanners here: they pair by pitch and are handled with the notes.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from engine.score.xml_text import MEASURE_NUMBER, attributes

_STARTS = {"slur": ("start",), "wedge": ("crescendo", "diminuendo"), "octave-shift": ("up", "down"),
           "pedal": ("start", "sostenuto", "resume"), "dashes": ("start",), "bracket": ("start",),
           "glissando": ("start",), "slide": ("start",), "wavy-line": ("start",)}
_STOPS = ("stop", "discontinue")
_ON_NOTES = ("slur", "glissando", "slide", "wavy-line")
_WORDS = {"slur": "slur", "wedge": "hairpin", "octave-shift": "ottava line", "pedal": "pedal line",
          "dashes": "dashes line", "bracket": "bracket line", "glissando": "glissando", "slide": "slide",
          "wavy-line": "trill line"}
_KIND = r"<(slur|wedge|octave-shift|pedal|dashes|bracket|glissando|slide|wavy-line)(?=[\s/>])"
_MARK = re.compile(_KIND + r"([^>]*?)(/?)>")
_WHOLE_MARK = re.compile(_KIND + r"[^>]*?(?:/>|>.*?</\1>)", re.S)
_CONTAINER = re.compile(r"<(note|direction)[\s>].*?</\1>", re.S)
_NOTE = re.compile(r"<note[\s>]")
_VOICE = re.compile(r"<voice>\s*([^<\s]*)\s*</voice>")
_DURATION = re.compile(r"<duration>\s*([\d.]+)\s*</duration>")
_TIMED = re.compile(r"<(note|backup|forward)[\s>].*?</\1>", re.S)
_HEAD = re.compile(r"\s*(?:<print\b[^>]*/>|<print\b.*?</print>|<attributes>.*?</attributes>|<barline\b.*?</barline>)", re.S)
_END_BARLINE = re.compile(r"(?:<barline\b[^>]*>(?:(?!<barline).)*?</barline>\s*)?</measure>\s*$", re.S)


@dataclass(frozen=True)
class Mark:
    """One start or stop of a spanner in a part's text."""

    measure: int  # index of its measure in the part
    kind: str  # the MusicXML element: slur, wedge, octave-shift, ...
    number: str
    role: str  # "start", "stop", or "" (continue, change)
    start: int  # the mark's element in the text
    end: int
    tag: str
    container: tuple[int, int]  # the <note> or <direction> holding it


def _marks(text: str, spans: list[tuple[int, int]]) -> list[Mark]:
    """The spanner marks of one part (measure spans in `text`), stops before starts on one note."""
    if not spans:
        return []
    marks, starts = [], [start for start, _ in spans]
    for kind in _STARTS:
        position = spans[0][0]
        while (position := text.find(f"<{kind}", position, spans[-1][1])) >= 0:
            match = _MARK.match(text, position)
            position += len(kind) + 1
            if match is None or match.group(1) != kind:  # <pedal-step>, ...
                continue
            values = attributes(match.group(2))
            kind_type = values.get("type", "")
            role = "start" if kind_type in _STARTS[kind] else "stop" if kind_type in _STOPS else ""
            close = match.end() if match.group(3) else text.index(f"</{kind}>", match.end()) + len(kind) + 3
            m = bisect_right(starts, match.start()) - 1
            marks.append(Mark(m, kind, values.get("number", "1"), role, match.start(), close, match.group(0),
                              _container(text, match.start(), spans[m][0])))
    return sorted(marks, key=lambda k: (k.container[0], k.role != "stop", k.start))


def _container(text: str, position: int, measure_start: int) -> tuple[int, int]:
    """The `<note>` or `<direction>` element around `position`, found backwards from it."""
    found = []
    for tag in ("note", "direction"):
        opening = position
        while (opening := text.rfind(f"<{tag}", measure_start, opening)) >= 0 and text[opening + len(tag) + 1] not in " >\n":
            pass  # <notations>, <direction-type>
        found.append((opening, tag))
    opening, tag = max(found)
    if opening < 0:
        return position, position
    return opening, text.index(f"</{tag}>", position) + len(tag) + 3


def _unmatched(marks: list[Mark]) -> tuple[list[Mark], dict[Mark, Mark]]:
    """The starts without a stop and stops without a start (numbers kept apart), and each stop's start."""
    opened: dict[tuple[str, str], list[Mark]] = {}
    lone, start_of = [], {}
    for mark in marks:
        key = (mark.kind, mark.number)
        if mark.role == "start":
            opened.setdefault(key, []).append(mark)
        elif mark.role == "stop":
            if opened.get(key):
                start_of[mark] = opened[key].pop()
            else:
                lone.append(mark)
    lone += [mark for stack in opened.values() for mark in stack]
    return sorted(lone, key=lambda k: k.start), start_of


def unmatched(text: str, spans_of_parts: list[list[tuple[int, int]]]) -> set[tuple[int, int, str, str, str]]:
    """(part, measure, kind, number, role) of every spanner mark of `text` without its other end."""
    return {(p, k.measure, k.kind, k.number, k.role)
            for p, spans in enumerate(spans_of_parts) for k in _unmatched(_marks(text, spans))[0]}


def _runs(n_measures: int, rewritten: set[int]) -> list[tuple[int, int, bool]]:
    """(first, last, rewritten) of each run of consecutive kept or rewritten measures."""
    runs: list[tuple[int, int, bool]] = []
    for m in range(n_measures):
        if runs and runs[-1][2] == (m in rewritten):
            runs[-1] = (runs[-1][0], m, runs[-1][2])
        else:
            runs.append((m, m, m in rewritten))
    return runs


def _stop_tag(mark: Mark) -> str:
    values = attributes(mark.tag)
    extra = {"octave-shift": ("size",), "pedal": ("line", "sign")}.get(mark.kind, ())
    written = [("type", "stop")] + [(name, values[name]) for name in ("number", *extra) if name in values]
    if mark.kind == "bracket":
        written.append(("line-end", "none"))
    return f"<{mark.kind} " + " ".join(f'{name}="{value}"' for name, value in written) + "/>"


def _start_tag(mark: Mark) -> str:
    """A copy of the original start, without its horizontal placement (it now starts elsewhere)."""
    return re.sub(r"""\s(?:default-x|relative-x)\s*=\s*(["']).*?\1""", "", mark.tag).rstrip("/>") + "/>"


def _placement(text: str, container: tuple[int, int]) -> str:
    """The `<voice>` and `<staff>` of a direction, for a direction added beside it."""
    body = text[container[0]:container[1]]
    return "".join(re.findall(r"<voice>[^<]*</voice>|<staff>[^<]*</staff>", body))


def _time_left(measure: str) -> int | float:
    """Divisions from the end of the last written element to the end of the measure's longest voice."""
    cursor = longest = 0.0
    for element in _TIMED.finditer(measure):
        body = element.group(0)
        found = _DURATION.search(body)
        duration = float(found.group(1)) if found else 0.0
        if element.group(1) == "backup":
            cursor -= duration
        elif element.group(1) == "forward" or not ("<grace" in body or "<chord" in body):
            cursor += duration
        longest = max(longest, cursor)
    gap = longest - cursor
    return int(gap) if gap == int(gap) else gap


def _voice(note: str) -> str:
    found = _VOICE.search(note)
    return found.group(1) if found else "1"


def _note_in_voice(text: str, voice: str, start: int, end: int, last: bool) -> tuple[int, int] | None:
    """The last (or first) sounding note of `voice` between `start` and `end`, not a chord's second note."""
    notes = [n.span() for n in _CONTAINER.finditer(text, start, end) if n.group(1) == "note"
             and not re.search(r"<grace|<chord|<rest", n.group(0))
             and _voice(n.group(0)) == voice]
    return (notes[-1] if last else notes[0]) if notes else None


def _into_note(text: str, note: tuple[int, int], tag: str) -> tuple[int, str]:
    """(position, text) inserting the notation `tag` into `note`."""
    body = text[note[0]:note[1]]
    opening = re.search(r"<notations(?:\s[^>]*[^/])?>", body)
    if opening:
        return note[0] + opening.end(), tag
    before = re.search(r"<lyric[\s>]|<play[\s>]|<listen[\s>]|</note>", body)
    return note[0] + before.start(), f"<notations>{tag}</notations>"


def without_marks(measure: str) -> str:
    """`measure` without its spanner marks and the whitespace between elements: what closing spanners
    leaves unchanged in a kept measure."""
    return re.sub(r">\s+<", "><", _tidy(_WHOLE_MARK.sub("", measure)))


def _tidy(measure: str) -> str:
    """`measure` without the empty notations and directions a removed mark left."""
    measure = re.sub(r"<notations>\s*</notations>|<direction-type>\s*</direction-type>", "", measure)
    return re.sub(r"<direction[\s>](?:(?!</direction>).)*</direction>",
                  lambda d: d.group(0) if "<direction-type" in d.group(0) else "", measure, flags=re.S)


class _Edits:
    """Insertions and removals in the measures of one part, applied measure by measure."""

    def __init__(self, text: str, spans: list[tuple[int, int]]) -> None:
        self.text, self.spans = text, spans
        self.by_measure: dict[int, list[tuple[int, int, int, str]]] = {}

    def _add(self, measure: int, start: int, end: int, new: str) -> None:
        edits = self.by_measure.setdefault(measure, [])
        edits.append((start, end, len(edits), new))

    def remove(self, mark: Mark) -> None:
        start = mark.start
        while start > mark.container[0] and self.text[start - 1] in " \t\r\n":
            start -= 1
        self._add(mark.measure, start, mark.end, "")

    def insert(self, measure: int, position: int, new: str) -> None:
        self._add(measure, position, position, new)

    def measure_of(self, position: int) -> int:
        return next(m for m, (start, end) in enumerate(self.spans) if start <= position < end)

    def replacements(self) -> list[tuple[int, int, str]]:
        """(start, end, new text) of every changed measure."""
        result = []
        for m, edits in self.by_measure.items():
            start, end = self.spans[m]
            pieces, cursor = [], start
            for edit_start, edit_end, _, new in sorted(edits):
                pieces += [self.text[cursor:edit_start], new]
                cursor = max(cursor, edit_end)
            pieces.append(self.text[cursor:end])
            result.append((start, end, _tidy("".join(pieces))))
        return result


def close_at_edges(text: str, spans_of_parts: list[list[tuple[int, int]]], rewritten: list[set[int]],
                   original: str, original_spans: list[list[tuple[int, int]]],
                   names: list[str]) -> tuple[str, list[str]]:
    """`text` (a splice: measures `rewritten[p]` of part p new, the others as in `original`) with every
    spanner closed at the edges of the rewritten measures, and a warning naming the kept measures changed."""
    replacements, changes = [], []
    for p, spans in enumerate(spans_of_parts):
        if not rewritten[p]:
            continue
        marks, edits = _marks(text, spans), _Edits(text, spans)
        start_in_original: dict[tuple[int, int], Mark] = {}

        def number(m: int) -> str:
            return MEASURE_NUMBER.match(text, spans[m][0])["value"]

        runs = _runs(len(spans), rewritten[p])
        for index, (first, last, is_new) in enumerate(runs):
            lone, _ = _unmatched([k for k in marks if first <= k.measure <= last])
            for mark in lone:
                word = f"{_WORDS[mark.kind]} {{}} in {names[p]} m. {{}}"
                if is_new:
                    edits.remove(mark)
                elif mark.role == "start" and index + 1 < len(runs):
                    changes.append(word.format(*_close(text, mark, spans[last], last, edits, number)))
                elif mark.role == "stop" and index > 0:
                    if not start_in_original:  # the original's pairs, read once where needed
                        pairs = _unmatched(_marks(original, original_spans[p]))[1]
                        start_in_original.update({(stop.measure, stop.start - original_spans[p][stop.measure][0]): start
                                                  for stop, start in pairs.items()})
                    start = start_in_original.get((mark.measure, mark.start - spans[mark.measure][0]))
                    if start is not None:
                        changes.append(word.format(*_open(text, mark, start, spans[first], first, edits, number)))
        replacements += edits.replacements()
    pieces, cursor = [], 0
    for start, end, new in sorted(replacements):
        pieces += [text[cursor:start], new]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), [f"spanners crossing into rewritten measures: {', '.join(changes)}"] if changes else []


def _close(text, mark: Mark, span, last: int, edits: _Edits, number) -> tuple[str, str]:
    """Close `mark` (a start) at the end of measure `last`: (what was done, measure number)."""
    if mark.kind == "slur":
        note = _note_in_voice(text, _voice(text[mark.container[0]:mark.container[1]]), mark.container[1], span[1], last=True)
        if note is not None:
            edits.insert(edits.measure_of(note[0]), *_into_note(text, note, _stop_tag(mark)))
            return "closed", number(edits.measure_of(note[0]))
    if mark.kind in _ON_NOTES or (mark.measure == last and not _NOTE.search(text, mark.container[1], span[1])):
        edits.remove(mark)  # a line starting after the last note would stop where it starts
        return "removed", number(mark.measure)
    measure = text[span[0]:span[1]]
    gap = _time_left(measure)
    offset = f"<offset>{gap}</offset>" if gap else ""
    direction = f"<direction><direction-type>{_stop_tag(mark)}</direction-type>{offset}{_placement(text, mark.container)}</direction>"
    edits.insert(last, span[0] + _END_BARLINE.search(measure).start(), direction)
    return "closed", number(last)


def _open(text, mark: Mark, start: Mark, span, first: int, edits: _Edits, number) -> tuple[str, str]:
    """Open `mark` (a stop) again at the start of measure `first` with a copy of its original `start`."""
    if mark.kind == "slur":
        note = _note_in_voice(text, _voice(text[mark.container[0]:mark.container[1]]), span[0], mark.container[0], last=False)
        if note is not None:
            edits.insert(edits.measure_of(note[0]), *_into_note(text, note, _start_tag(start)))
            return "reopened", number(edits.measure_of(note[0]))
    if mark.kind in _ON_NOTES or (mark.measure == first and not _NOTE.search(text, span[0], mark.container[0])):
        edits.remove(mark)  # a line stopping before the first note would start where it stops
        return "removed", number(mark.measure)
    head = text.index(">", span[0]) + 1
    while (block := _HEAD.match(text, head)) is not None and block.end() <= span[1]:
        head = block.end()
    edits.insert(first, head, f"<direction><direction-type>{_start_tag(start)}</direction-type>{_placement(text, mark.container)}</direction>")
    return "reopened", number(first)
