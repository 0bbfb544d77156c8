"""What NotaGen's notation loses of a score: its sounding notes compared part-measure by part-measure.

NotaGen reads and writes interleaved ABC (xml2abc / abc2xml). Where a score holds something that trip
cannot carry, a continuation's kept bars or an ABC export change; the user is told so in one line
(`notation_losses`) instead of the music changing silently. `training.roundtrip` counts the same thing
over whole corpora.
"""
from __future__ import annotations

import music21

from engine.score.document import ScoreDocument

Notes = tuple[tuple[float, float, float], ...]
"""A part-measure's sounding notes, sorted: (MIDI pitch, onset in the measure, duration), in quarters."""

TOLERANCE = 1 / 128
"""Onsets and durations that differ by less (a 512th note) are the same: a file's divisions may not hold
a tuplet exactly (256 a quarter: a triplet eighth of 85/256, its third note at 2.6646 instead of 8/3,
music21 corpus, Schubert, "Der Lindenbaum"), while the ABC gives the exact value."""

MAX_NAMED = 3
"""Changed measures named in a warning line before it says 'and N more'."""


def measure_notes(document: ScoreDocument, printed_only: bool = False) -> list[list[Notes]]:
    """Per part (row), per measure: the sounding notes (with `printed_only`, without the invisible ones:
    a trill or tremolo a notation program plays from notes it does not print).

    The transposition the part declares (`<transpose>`) is applied, so a transposing instrument written
    either way compares equal; one music21 only assumes from the instrument's name or MIDI program is not
    (a part named "Clarinet" and written at sounding pitch would compare a tone off after its instrument
    is lost); a tied note counts once per measure it is written in, as it is engraved; an unpitched
    (percussion) note counts by its display pitch, the line it is written on; a chord symbol, which music21
    counts among a measure's notes, is not one (it does not sound)."""
    rows = []
    for part, measures in zip(document.layout.parts, document.layout.measures):
        shift = 0
        if part.atSoundingPitch is False:  # music21 sets it so when the part has a <transpose>
            interval = getattr(part.getInstrument(returnDefault=False), "transposition", None)
            shift = interval.semitones if interval is not None else 0
        rows.append([
            tuple(sorted((ps + shift, float(note.getOffsetInHierarchy(measure)), float(note.quarterLength))
                         for note in measure.recurse().notes if not isinstance(note, music21.harmony.Harmony)
                         and not (printed_only and note.style.hideObjectOnPrint)
                         for ps in _sounding(note)))
            for measure in measures
        ])
    return rows


def _sounding(note) -> list[float]:
    """The pitch spaces of a note or chord; unpitched notes (also in a percussion chord) by display pitch."""
    notes = note.notes if isinstance(note, music21.chord.ChordBase) else [note]
    return [n.displayPitch().ps if isinstance(n, music21.note.Unpitched) else n.pitch.ps for n in notes]


def changed_measures(before: list[list[Notes]], after: list[list[Notes]], columns: int | None = None
                     ) -> tuple[int, list[tuple[int, int]]]:
    """(part-measures compared, the (part, measure) indices whose notes changed or went missing) over the
    first `columns` measures of `before` (all when None). A measure without notes may go missing."""
    total, changed = 0, []
    for p, row in enumerate(before):
        other = after[p] if p < len(after) else []
        for m, notes in enumerate(row[:columns]):
            total += 1
            if not _same(notes, other[m] if m < len(other) else ()):  # a missing last bar may have been empty
                changed.append((p, m))
    return total, changed


def _same(notes: Notes, other: Notes) -> bool:
    return len(notes) == len(other) and all(
        pitch == pitch_2 and abs(onset - onset_2) < TOLERANCE and abs(length - length_2) < TOLERANCE
        for (pitch, onset, length), (pitch_2, onset_2, length_2) in zip(notes, other))


def abc_round_trip(document: ScoreDocument, interleaved: bool = True) -> ScoreDocument:
    """`document` after NotaGen's trip and back: through its interleaved ABC (what continuation reads and
    the interleaved export writes) or its standard ABC (the ABC export)."""
    from engine.score.notagen_abc import abc_to_musicxml, interleaved_to_musicxml

    musicxml = interleaved_to_musicxml(document.interleaved_abc) if interleaved else abc_to_musicxml(document.abc)
    return ScoreDocument(musicxml, document.title)


def notation_losses(original: ScoreDocument, converted: ScoreDocument, columns: int | None = None) -> list[str]:
    """One warning line when `converted` (the score after NotaGen's notation) changed notes of the first
    `columns` measures (all when None) of `original`; none when every part-measure is intact."""
    after = measure_notes(converted)
    total, changed = changed_measures(measure_notes(original), after, columns)
    if not changed:
        return []
    numbers = [column.number for column in original.grid.columns]
    named = ", ".join(f"part {p + 1} measure {numbers[m]}" for p, m in changed[:MAX_NAMED])
    more = f" and {len(changed) - MAX_NAMED} more" if len(changed) > MAX_NAMED else ""
    printed = len(changed_measures(measure_notes(original, printed_only=True), after, columns)[1])
    invisible = f"; {len(changed) - printed} of them lose only invisible notes (played, not printed)" \
        if printed < len(changed) else ""
    return [f"NotaGen's notation (ABC) cannot carry everything in this score: {len(changed)} of {total} "
            f"part-measures changed ({named}{more}{invisible})"]


def export_losses(document: ScoreDocument, interleaved: bool) -> list[str]:
    """`notation_losses` of `document`'s ABC export (interleaved or standard ABC)."""
    return notation_losses(document, abc_round_trip(document, interleaved))
