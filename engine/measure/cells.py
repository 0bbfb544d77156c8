"""The measure model's grid of a score (Yan & Duan, section 2): its value types and beat arithmetic.

    MeasureScore
      parts[p]      Part: name, instrument token base, transposition shift, clef
      columns[m]    engine.score.grid.Column: printed number, time signature, bar length, key signature
      cells[p][m]   Cell: beat unit, number of beats, voices
        voice         a tuple of ChordEvents (chord-duration tuples)
          ChordEvent    chord: a sorted tuple of Notes (empty = rest), duration in beats, pad flag
            Note          (Pitch, tie): tie = the note continues the previous note of that pitch
              Pitch         diatonic step, accidental (-2 double flat .. +2 double sharp), octave

The columns are the app's own (`engine.score.grid.measure_layout`), so cell (p, m) here is cell
(p, m) of `ScoreDocument.grid`, the one measure locks address. Reading and writing music21 scores is
in engine.measure.representation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

from engine.score.grid import Column

STEPS = "CDEFGAB"
STEP_SEMITONES = (0, 2, 4, 5, 7, 9, 11)
MIN_ALTER, MAX_ALTER = -2, 2
MIN_OCTAVE, MAX_OCTAVE = 0, 9
#: Durations are products of powers of these primes (section 2.3).
PRIMES = (2, 3, 5, 7, 11)
#: Exponent range of each prime; the paper's range was lost in extraction. -8..8 covers a 1/256
#: beat (a 1024th note in 4/4) and every triplet, quintuplet, septuplet and 11-tuplet duration.
MIN_EXPONENT, MAX_EXPONENT = -8, 8


@dataclass(frozen=True, order=True)
class Pitch:
    """A spelled pitch: step 0..6 (C..B), alter -2..2, octave (scientific: C4 is middle C)."""

    octave: int
    step: int
    alter: int

    @property
    def midi(self) -> int:
        return 12 * (self.octave + 1) + STEP_SEMITONES[self.step] + self.alter

    @property
    def name(self) -> str:
        accidental = {-2: "--", -1: "-", 0: "", 1: "#", 2: "##"}[self.alter]
        return f"{STEPS[self.step]}{accidental}{self.octave}"

    @property
    def diatonic(self) -> int:
        """Diatonic index (7 per octave): what staff position the note sits on."""
        return 7 * self.octave + self.step

    @classmethod
    def parse(cls, name: str) -> Pitch:
        """'C#4', 'B-3', 'E--5' (music21 spelling)."""
        match = re.fullmatch(r"([A-G])(##|#|--|-|)(-?\d+)", name)
        if not match:
            raise ValueError(f"not a pitch name: {name!r}")
        alter = {"": 0, "#": 1, "##": 2, "-": -1, "--": -2}[match.group(2)]
        return cls(int(match.group(3)), STEPS.index(match.group(1)), alter)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class Note:
    pitch: Pitch
    tie: bool = False

    def __repr__(self) -> str:
        return f"{self.pitch.name}{'~' if self.tie else ''}"


@dataclass(frozen=True)
class ChordEvent:
    """A chord-duration tuple. `chord` is sorted and has no repeated pitch; () is a rest.
    A pad event (`pad=True`, empty chord) completes an incomplete measure."""

    chord: tuple[Note, ...]
    duration: Fraction
    pad: bool = False

    def __repr__(self) -> str:
        body = "PAD" if self.pad else ("[" + " ".join(map(repr, self.chord)) + "]" if self.chord else "r")
        return f"{body}*{self.duration}"


Voice = tuple[ChordEvent, ...]


@dataclass(frozen=True)
class Cell:
    """One part-wise measure. `beat_unit` is in quarter notes; every voice lasts `n_beats` beats."""

    beat_unit: Fraction
    n_beats: int
    voices: tuple[Voice, ...]

    @property
    def content_beats(self) -> Fraction:
        """Beats of real content (the measure length without padding) of the first voice."""
        return sum((e.duration for e in self.voices[0] if not e.pad), Fraction(0)) if self.voices else Fraction(0)


@dataclass(frozen=True)
class Part:
    """A row. `instrument` is the instrument token's base name; `shift` the transposition applied
    by augmentation (section 5.2), which the token carries: 'violin_shifted-7'."""

    name: str
    instrument: str
    shift: int = 0
    clef: str = field(default="", compare=False)  # carried for writing, not part of the model's grid

    @property
    def token(self) -> str:
        return instrument_token(self.instrument, self.shift)


@dataclass(frozen=True)
class MeasureScore:
    """Rows x columns of cells; `losses` lists what reading the score could not represent."""

    parts: tuple[Part, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    title: str = ""
    losses: tuple[str, ...] = field(default=(), compare=False)

    @property
    def n_parts(self) -> int:
        return len(self.parts)

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def with_cells(self, cells) -> MeasureScore:
        return replace(self, cells=tuple(tuple(row) for row in cells))


def instrument_token(instrument: str, shift: int = 0) -> str:
    return instrument if shift == 0 else f"{instrument}_shifted{shift:+d}"


def normalise_instrument(name: str) -> str:
    """'Violin I' -> 'violin', 'Soprano' -> 'soprano', 'Violoncello 2' -> 'violoncello'."""
    text = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    while text and (text[-1].isdigit() or text[-1] in {"i", "ii", "iii", "iv", "v", "vi"}):
        text.pop()
    return "_".join(text) or "unknown"


# ---------------------------------------------------------------------------------------------
# beats and durations
# ---------------------------------------------------------------------------------------------


def beat_structure(time_signature: str) -> tuple[Fraction, int]:
    """(beat unit in quarter notes, beats per measure) of a time signature such as '6/8'.

    Simple meters (numerator 1-4) beat the denominator's note; compound meters (multiples of 3
    above 3) beat its dotted value; other even numerators (8/8, 10/8) are grouped in pairs when that
    gives 2-4 beats; anything else beats the denominator's note."""
    numerator, denominator = (int(x) for x in time_signature.split("/"))
    unit = Fraction(4, denominator)
    if numerator <= 4:
        return unit, numerator
    if numerator % 3 == 0:
        return 3 * unit, numerator // 3
    if numerator % 2 == 0 and numerator // 2 <= 4:
        return 2 * unit, numerator // 2
    return unit, numerator


def duration_exponents(duration: Fraction) -> tuple[int, ...]:
    """The exponents of `PRIMES` whose product is `duration` (3/4 -> (-2, 1, 0, 0, 0))."""
    duration = Fraction(duration)
    if duration <= 0:
        raise ValueError(f"duration {duration} is not positive")
    exponents = []
    num, den = duration.numerator, duration.denominator
    for prime in PRIMES:
        e = 0
        while num % prime == 0:
            num //= prime
            e += 1
        while den % prime == 0:
            den //= prime
            e -= 1
        exponents.append(e)
    if num != 1 or den != 1:
        raise ValueError(f"duration {duration} has a prime factor above {PRIMES[-1]}")
    if not all(MIN_EXPONENT <= e <= MAX_EXPONENT for e in exponents):
        raise ValueError(f"duration {duration} needs an exponent outside {MIN_EXPONENT}..{MAX_EXPONENT}")
    return tuple(exponents)


def duration_from_exponents(exponents) -> Fraction:
    value = Fraction(1)
    for prime, e in zip(PRIMES, exponents):
        value *= Fraction(prime) ** int(e)
    return value


def split_at_beats(onset: Fraction, duration: Fraction) -> list[tuple[Fraction, Fraction]]:
    """Pieces (onset, duration) of a span cut at every integer beat strictly inside it."""
    pieces = []
    end = onset + duration
    start = onset
    while True:
        boundary = Fraction(start.numerator // start.denominator + 1)  # the next integer beat
        if boundary >= end:
            pieces.append((start, end - start))
            return pieces
        pieces.append((start, boundary - start))
        start = boundary


def empty_cell(beat_unit: Fraction, n_beats: int, pad: bool = False) -> Cell:
    """A measure of one voice of rests (or pad events), one per beat."""
    return Cell(Fraction(beat_unit), n_beats, (tuple(ChordEvent((), Fraction(1), pad) for _ in range(n_beats)),))

