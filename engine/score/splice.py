"""Writing rewritten measures into a score's own MusicXML text, leaving every other byte alone.

Inpainting must never change a locked measure, nor the part list (names, instruments), nor anything
else it did not rewrite. Re-exporting the whole score with music21 changed all of these (a voice part
came back named "Ob", lyrics and layout were re-spelled) and took 11 s on a long quartet. Instead
the rewritten measures are exported on their own (`engine.measure.representation.replace_cells`) and
their `<measure>` elements replace the original ones in the original text; locked measures are the
original bytes by construction.

Rows of the grid are staves: a MusicXML `<part>` with `<staves>2</staves>` is two rows, so a measure
of it is replaced whole when any of its staves is rewritten (the other staff then comes from music21's
reading of the original, the same notes). Each spliced measure states the exporter's `<divisions>`
first and restores the original's at its end, so the locked measures after it read as before.
Spanners crossing the edges of the rewritten measures are then closed (`engine.score.spanners`). A
NotaGen continuation (`continued_xml`) is spliced the same way: its new measures after the kept ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from engine.errors import ScoreError
from engine.score import spanners, xml_text

_PART_OPEN = re.compile(r"<part[\s>]")
_STAVES = re.compile(r"<staves>\s*(\d+)\s*</staves>")
_ATTRIBUTES = re.compile(r"<attributes>.*?</attributes>", re.S)
_DIVISIONS = re.compile(r"<divisions>\s*([\d.]+)\s*</divisions>")
_PART_NAME = re.compile(r"<score-part\s[^>]*?" + xml_text.value("id")
                        + r".*?(?:<part-name[^>]*>(?P<name>[^<]*)</part-name>|</score-part>)", re.S)
_PART_ID = re.compile(r"<part\s[^>]*?" + xml_text.value("id"))


@dataclass(frozen=True)
class _Part:
    start: int  # offset of the part's content in the text
    measures: tuple[tuple[int, int], ...]  # (start, end) of each <measure> element in the text
    staves: int


@lru_cache(maxsize=8)
def _parts(xml: str) -> tuple[_Part, ...]:
    """The `<part>`s of a score-partwise text and their measures (found by plain search: a regular
    expression scanning each measure's text took seconds on a long quartet)."""
    if "<score-timewise" in xml[:2000]:
        raise ScoreError("a score-timewise MusicXML file cannot be inpainted (save it as score-partwise)")
    parts, position = [], 0
    while (opening := _PART_OPEN.search(xml, position)) is not None:
        body_start = xml.index(">", opening.start()) + 1
        body_end = xml.find("</part>", body_start)
        if body_end < 0:
            raise ScoreError("the MusicXML has a part without its end tag")
        measures, cursor = [], body_start
        while (start := xml.find("<measure", cursor, body_end)) >= 0:
            cursor = xml.index("</measure>", start) + len("</measure>")
            measures.append((start, cursor))
        staves = _STAVES.search(xml, body_start, body_end)
        parts.append(_Part(body_start, tuple(measures), int(staves.group(1)) if staves else 1))
        position = body_end
    return tuple(parts)


def rows_of_parts(xml: str, n_rows: int) -> list[list[int]]:
    """The grid rows of each `<part>` of `xml` (one per staff), checked against the grid's row count."""
    rows, next_row = [], 0
    for part in _parts(xml):
        rows.append(list(range(next_row, next_row + part.staves)))
        next_row += part.staves
    if next_row != n_rows:
        raise ScoreError(f"the score's {len(rows)} MusicXML parts hold {next_row} staves, "
                         f"but music21 reads {n_rows}: its measures cannot be rewritten safely")
    return rows


def _divisions_after(xml: str, part: _Part, index: int) -> str | None:
    """The `<divisions>` in force at the end of measure `index` of `part` (None if never set)."""
    value = None
    for start, end in part.measures[: index + 1]:
        for found in _DIVISIONS.finditer(xml, start, end):
            value = found.group(1)
    return value


def _without_repeats(measure: str) -> str:
    """music21 writes a two-staff measure's key or metre change once per staff; one applies to both."""
    seen: set[str] = set()

    def once(match: re.Match) -> str:
        text = re.sub(r"\s+", "", match.group(0))
        if text in seen and "<clef" not in text:  # a clef may change back within a measure
            return ""
        seen.add(text)
        return match.group(0)

    return _ATTRIBUTES.sub(once, measure)


def _with_divisions(measure: str, exported: str, original: str | None) -> str:
    """`measure` (exported with divisions `exported`) made to read right among the original measures."""
    measure = _without_repeats(measure)
    head_end = measure.index(">") + 1
    body = measure[head_end:]
    if not _DIVISIONS.search(body):
        body = f"<attributes><divisions>{exported}</divisions></attributes>" + body
    if original is not None and original != exported:
        close = body.rindex("</measure>")
        body = body[:close] + f"<attributes><divisions>{original}</divisions></attributes>" + body[close:]
    return measure[:head_end] + body


def part_names(xml: str) -> list[str]:
    """The name of each `<part>` as a warning names it."""
    names = {found["value"]: " ".join((found["name"] or "").split()) for found in _PART_NAME.finditer(xml)}
    ids = [found["value"] for found in _PART_ID.finditer(xml)]
    return [names.get(part_id) or f"part {i + 1}" for i, part_id in enumerate(ids)]


def unmatched_spanners(xml: str) -> set[tuple[int, int, str, str, str]]:
    """(part, measure, kind, number, role) of each spanner start without its stop or stop without its start."""
    return spanners.unmatched(xml, _spans(xml))


def _spans(xml: str) -> list[list[tuple[int, int]]]:
    """The (start, end) of every `<measure>` of each part: what `engine.score.spanners` reads."""
    return [list(part.measures) for part in _parts(xml)]


def splice_measures(original: str, exported: str, first_column: int,
                    columns_of_part: list[set[int]]) -> tuple[str, list[str]]:
    """`original` with measure m of its part i replaced by measure (m - first_column) of the same part
    of `exported`, for every m in `columns_of_part[i]`, spanners closed at the edges; and the warnings
    naming the kept measures that closing changed."""
    old_parts, new_parts = _parts(original), _parts(exported)
    if len(old_parts) != len(new_parts):
        raise ScoreError(f"the rewritten measures came out in {len(new_parts)} parts, not {len(old_parts)}")
    replacements = []
    for i, columns in enumerate(columns_of_part):
        if not columns:
            continue
        old, new = old_parts[i], new_parts[i]
        first_divisions = _DIVISIONS.search(exported, new.start)
        exported_divisions = first_divisions.group(1) if first_divisions else "1"
        for m in sorted(columns):
            k = m - first_column
            if not (0 <= m < len(old.measures) and 0 <= k < len(new.measures)):
                raise ScoreError(f"part {i + 1} has no measure {m + 1} to rewrite")
            start, end = new.measures[k]
            measure = _with_divisions(exported[start:end], exported_divisions, _divisions_after(original, old, m))
            replacements.append((*old.measures[m], measure))
    pieces, cursor = [], 0
    for start, end, text in sorted(replacements):
        pieces.append(original[cursor:start])
        pieces.append(text)
        cursor = end
    pieces.append(original[cursor:])
    spliced = "".join(pieces)
    return spanners.close_at_edges(spliced, _spans(spliced), columns_of_part, original, _spans(original),
                                   part_names(original))


def measure_texts(xml: str) -> list[list[str]]:
    """The text of every `<measure>` element of each `<part>` (what a locked measure must keep)."""
    return [[xml[start:end] for start, end in part.measures] for part in _parts(xml)]


def excerpt_xml(xml: str, columns: set[int]) -> str:
    """`xml` with only the measures at `columns` in every part, each run of consecutive ones first
    stating the divisions (and staves) in force before it: a small score that music21 reads quickly
    and, within a run, exactly as the whole (a measure after a spliced one reads with the divisions
    the spliced one restored)."""
    pieces, cursor = [], 0
    for part in _parts(xml):
        for m, (start, end) in enumerate(part.measures):
            pieces.append(xml[cursor:start])
            cursor = end
            if m not in columns:
                continue
            measure = xml[start:end]
            if m - 1 not in columns:
                divisions = _divisions_after(xml, part, m - 1) if m else None
                staves = f"<staves>{part.staves}</staves>" if part.staves > 1 else ""
                if divisions or staves:
                    head_end = measure.index(">") + 1
                    state = f"<divisions>{divisions}</divisions>" if divisions else ""
                    measure = f"{measure[:head_end]}<attributes>{state}{staves}</attributes>{measure[head_end:]}"
            pieces.append(measure)
    pieces.append(xml[cursor:])
    return "".join(pieces)


#: A plain final bar line (no repeat, no ending): a continued score's moves to the end of the new music.
_FINAL_BARLINE = re.compile(r"""\s*<barline\s+location\s*=\s*(["'])right\1\s*>\s*<bar-style>light-heavy</bar-style>\s*</barline>""")


def continued_xml(original: str, generated: str, keep: int) -> tuple[str, list[str]]:
    """`original` with the measures of each part from `keep` on replaced by `generated`'s measures from
    `keep` on (as many as it has): a NotaGen continuation; and the warnings naming the kept measures
    changed. The generated piece comes back through ABC, whose kept bars had lost ties, slurs, lyrics
    and layout; here they are the original's own bytes, and so are the part list, the credits and
    everything else outside the new measures, except where a spanner (a slur going on past bar `keep`)
    had to be closed at the edge, and the final bar line of a score continued at its end, which moves
    to the end of the new measures (the generated piece's own). The new measures are numbered on from the last kept one and state the
    divisions they were written with."""
    old_parts, new_parts = _parts(original), _parts(generated)
    if [p.staves for p in old_parts] != [p.staves for p in new_parts]:
        raise ScoreError(f"the continuation came out in {len(new_parts)} parts, not as the score's {len(old_parts)}")
    replacements = []
    for old, new in zip(old_parts, new_parts):
        if not keep <= len(old.measures) or not keep <= len(new.measures):
            raise ScoreError(f"the score has no measure {keep} to continue from")
        if keep == len(old.measures) and len(new.measures) > keep and keep:
            last = old.measures[-1]
            replacements.append((*last, _FINAL_BARLINE.sub("", original[last[0] : last[1]])))
        start = old.measures[keep][0] if keep < len(old.measures) else (old.measures[-1][1] if old.measures else old.start)
        end = old.measures[-1][1] if keep < len(old.measures) else start
        number = _last_number(original, old.measures[:keep])
        measures = []
        for k, (m_start, m_end) in enumerate(new.measures[keep:]):
            measure = generated[m_start:m_end]
            if k == 0:
                measure = _with_divisions(measure, _divisions_after(generated, new, keep - 1) or "1", None)
            if number is not None:
                found = xml_text.MEASURE_NUMBER.search(measure)
                if found:
                    measure = f"{measure[:found.start('value')]}{number + 1 + k}{measure[found.end('value'):]}"
            measures.append(measure)
        replacements.append((start, end, "".join(measures)))
    pieces, cursor = [], 0
    for start, end, text in sorted(replacements):
        pieces += [original[cursor:start], text]
        cursor = end
    pieces.append(original[cursor:])
    continued = "".join(pieces)
    spans = _spans(continued)
    return spanners.close_at_edges(continued, spans, [set(range(keep, len(part))) for part in spans],
                                   original, _spans(original), part_names(original))


def _last_number(xml: str, measures: tuple[tuple[int, int], ...]) -> int | None:
    """The number of the last of `measures` when it is a plain integer (None: none, or "12a")."""
    if not measures:
        return None
    found = xml_text.MEASURE_NUMBER.search(xml, measures[-1][0], measures[-1][1])
    return int(found["value"]) if found and found["value"].isdigit() else None
