"""Which next characters keep NotaGen's output bar-exact: a mask over the char decoder's 128 ids.

A char is allowed when `BarReader` accepts it, it stays inside the subset of ABC this module lets the
model write (below), and the bar can still be completed to the right length afterwards. The last test is
exact: durations are kept on a grid of 1/64 whole note (abc2xml rounds anything finer), every note,
rest or chord can be given any length on that grid, so "can still be completed" reduces to "some
completion of the element being typed (and of its open tuplet group or broken-rhythm pair) ends on the
grid, no later than the bar's target". A digit after `c` is therefore allowed only if a length it
starts fits, and `c` only if some length of it fits.

The bar's target: the metre for a line's first voice (a shorter first voice is allowed on the first
body line and on the line announced as last by `[r:i/0]`, or anywhere with `short_bars="anywhere"`;
none with `M:none`), then the first voice's length for every later voice of the line.

Written subset (the reader reads more): lengths `n`, `n/`, `n//`, `n/d` with n < 100 (odd with d) and d a power of
two up to 64; chords without inner lengths; broken rhythm `>` `<` `>>` `<<` outside
tuplets, not chained and between two elements of equal written length (abctoolkit's bar durations, which
the BAE uses, add the two written lengths); tuplets `(p`, `(p:q`, `(p:q:r` with single digits, not nested
and not inside a broken pair; ties right after a note or chord; slurs closed only when open; `!...!`
decorations and the shorthands `.MOPSTuv`; the bar lines `| || |] |: :| ::` (those NotaGen's patchilizer
splits on, but `[|`, which real scores do not write) with a one-digit ending; no left bar lines, no `[1`
endings; inline `[K:]`, `[L:]` only at a voice bar's start, no inline `[M:]` (a metre change
written in one voice would give the parts of one bar different metres; the header's `M:` holds); voices only as declared in the header,
in their order; `[r:i/j]` with j one less than the previous line's. What annotations, decorations and
header voice lines may say: `engine.notagen.written_subset`.

Musical bar ends (`musical`, a preference, not part of the mask): the decoder also refuses, and redraws
from the rest of the mask, chars that would give an element shorter than a 16th (or than the shortest
the piece already writes) that neither ends the bar nor lands on a beat.

Special ids: EOS (2) ends a patch early, which the patchilizer does only right before a bar line or after
a newline; BOS (1) opens the end-of-piece patch, allowed at a patch's first position at the start of a
body line (not while `[r:i/j]` announces more lines; required after `[r:i/0]`'s line). PAD never.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Literal

from gmpy2 import mpq

from engine.notagen import bar_reader as br
from engine.notagen.bar_reader import BarReader
from engine.notagen.header import MAX_VOICES
from engine.notagen.patchilizer import BARLINES, BOS_ID, EOS_ID
from engine.notagen.written_subset import (
    BAR_END, BARLINES_AFTER_JUMP, JUMPS, annotation_allows, decoration_allowed, ends_at_barline, permitted_decorations,
    score_line_allows, span_open, voice_line_allows,
)

GRID = mpq(1, 64)
SIXTEENTH = mpq(1, 16)
WHOLE_NOTE = mpq(1)
ShortBars = Literal["edges", "anywhere"]

_PRINTABLE = tuple(chr(i) for i in range(32, 127)) + ("\n",)  # no tab: the finisher refuses control characters
_PRINTABLE_SET = frozenset(_PRINTABLE)
_MASK_IDS = sorted([BOS_ID, EOS_ID] + [ord(char) for char in _PRINTABLE])
_SHORTHANDS = ".MOPSTuv"  # those real scores write (`~`: abctoolkit cannot read it after a note)
_MUSIC_CHARS = tuple("abcdefgABCDEFG^_=',0123456789/zxZX <>().MOPSTuv-\"!{}[]|:\nrVK")
_MUSIC_CLASSES = (tuple(sorted(br.NOTE_LETTERS)), _SHORTHANDS)
_MUSIC_SET = frozenset(_MUSIC_CHARS)
_MUSIC_SINGLES = tuple(char for char in _MUSIC_CHARS if not any(char in chars for chars in _MUSIC_CLASSES))
_CONTINUING = br.DIGITS | br.ACCIDENTALS | br.NOTE_LETTERS | br.OCTAVE_MARKS | {"/"}
"""Chars that may continue an open element; every other char commits it."""
_TIMED = br.REST_LETTERS | br.MEASURE_RESTS | frozenset("<>|:")
"""Chars outside `_CONTINUING` that change the bar's duration state (start a rest, a broken pair, a bar line)."""
_GRACE_CHARS = frozenset("abcdefgABCDEFG^_=',")
_BARLINES = tuple(barline for barline in BARLINES if barline != "[|")
"""The closing bar lines real scores write (xml2abc never writes `[|`; the model took it for a stray `[`)."""
_DENOMINATORS = ("2", "4", "8", "16", "32", "64")
_TUPLET_SPEC = re.compile(r"^3$")  # triplets only: abctoolkit's bar durations read no other tuplet
CHORD_NOTES = 6
"""The most notes a chord may hold (the fine-tuning corpus: 6 in six of 306,000 chords, none more): a model
that lost track of an open `[` would otherwise stack notes without end."""
OCTAVE_COMMAS, OCTAVE_APOSTROPHES = 4, 3
"""Octave marks a pitch may take: from `C,,,,` (C0) to `b'''` (B7), about a piano's range; capitals take only
commas and small letters only apostrophes, as xml2abc writes them (the corpus: 4 commas, 2 apostrophes at most)."""
HEADER_LINE_CHARS = 200
"""The longest header line the model may write (a runaway line would fill the context)."""
_HEADER_FIELDS = frozenset("QLMKV")  # those of the training data (it drops X, T, C: no garbled titles)
_FIELD_NAMES_IN_BAR = "KL"  # no `[M:]`: see the module docstring


@lru_cache(maxsize=4096)
def length_multipliers(num: str, slashes: int, den: str) -> tuple[mpq, ...]:
    """Sorted multipliers of the unit that a length suffix typed so far can still become (written subset:
    `n`, `/`, `n/d` with n odd as xml2abc writes it, `/d`; abctoolkit's bar durations, which the BAE uses,
    cannot read `//` or `n/`)."""
    if len(num) > 2 or (den and slashes != 1) or slashes > 1:
        return ()
    nums = [int(num)] if num else [1]
    if len(num) == 1 and not slashes:  # a second digit only before the slash
        nums += [int(num) * 10 + d for d in range(10)]
    elif not num and not slashes:
        nums = list(range(1, 100))
    if den:
        denominators = [int(d) for d in _DENOMINATORS if d.startswith(den)]
    elif slashes:
        denominators = ([] if num else [2]) + [int(d) for d in _DENOMINATORS]
    else:
        denominators = [1] + [int(d) for d in _DENOMINATORS]
    return tuple(sorted({mpq(n, d) for n in nums for d in denominators if d == 1 or n % 2}))  # `3/2`, never `6/4`


@lru_cache(maxsize=4096)
def grid_lengths(unit: mpq, key: tuple[str, int, str]) -> tuple[mpq, ...]:
    """Sorted lengths (whole notes) that a suffix typed so far can still give: note values on the 1/64 grid."""
    return tuple(length for length in (unit * m for m in length_multipliers(*key)) if note_value(length))


@lru_cache(maxsize=1024)
def note_value(length: mpq) -> bool:
    """Whether one note can show `length` (whole notes): a 64th to a breve, plain, dotted or double-dotted.
    Written lengths outside these (`c11/64`, `c5`: tied notes in a score) are 0.008 % of the fine-tuning
    corpus's notes; the model reached them filling a bar it had fallen short of."""
    for dots in (mpq(1), mpq(3, 2), mpq(7, 4)):
        base = length / dots
        if base.numerator == 1 and base.denominator & (base.denominator - 1) == 0 and base.denominator <= 64:
            return _on_grid(length)
        if base in (1, 2):
            return True
    return False


_TOKEN_CHARS = {EOS_ID: br.EOS_CHAR, BOS_ID: br.BOS_CHAR}


def token_char(token: int) -> str:
    """The char the reader reads for a char decoder id (EOS and BOS as `EOS_CHAR` and `BOS_CHAR`)."""
    return _TOKEN_CHARS.get(token) or chr(token)


@lru_cache(maxsize=4096)
def _suffix_note_value(unit: mpq, key: tuple[str, int, str]) -> bool:
    """`note_value` of a suffix's length (memoised: every char that commits an element asks)."""
    return note_value(unit * br.suffix_value(*key))


def length_complete(num: str, slashes: int, den: str) -> bool:
    """Whether a suffix may end here in the written subset."""
    if len(num) > 2 or slashes > 1 or (den and (slashes != 1 or den not in _DENOMINATORS)):
        return False
    return not (num and slashes and not den)


def _on_grid(length: mpq) -> bool:
    return GRID.denominator % length.denominator == 0  # (length / GRID is whole: faster than dividing)


class BarConstraint:
    """The allowed next chars of one `BarReader` (one batch row), with the short-bar policy."""

    def __init__(self, short_bars: ShortBars = "edges") -> None:
        self.short_bars = short_bars

    # --------------------------------------------------------------------------------- public
    def allowed_chars(self, reader: BarReader) -> set[str]:
        """Printable chars and newline that keep the text readable and bar-exact."""
        allows = self.char_tester(reader)
        return {char for char in _PRINTABLE if allows(char)}

    def char_tester(self, reader: BarReader) -> Callable[[str], bool]:
        """`char in allowed_chars(reader)` for the chars tested at one state, sharing the work they share:
        shortcuts that give what `_allows` gives char by char, without copying the reader for each char."""
        if reader.mode == br.ENDED or (reader.mode == br.LINE_START and reader.patch_pos):
            return lambda char: False  # after a newline the patch ends (EOS) unless it is full
        if not reader.in_body and reader.mode in (br.LINE_START, br.HEADER):  # only a newline is read at once
            return lambda char: (char in _PRINTABLE_SET and _header_allows(reader, char)
                                 and (char != "\n" or reader.mode != br.HEADER or reader.copy().step(char)))
        if reader.mode == br.DECORATION and not (reader.element == "chord" and reader.chord_stage):
            # the name so far leaves the bar's duration state as it was
            inside = reader.closer == "!" and (not reader.segment_open or self._feasible(reader))
            prefix = reader.buffer
            names = self._permitted_decorations(reader) if inside else ()
            allowed = {name[len(prefix)] for name in names if name.startswith(prefix) and len(name) > len(prefix)}
            return (allowed | {reader.closer} if self._allows(reader, reader.closer) else allowed).__contains__
        if reader.mode == br.QUOTE:  # annotation text lasts nothing: only its own rules apply
            return lambda char: char in _PRINTABLE_SET and annotation_allows(reader.buffer, char)
        if reader.mode in (br.FIELD, br.DECORATION, br.HEADER) or not reader.in_body:
            return lambda char: char in _PRINTABLE_SET and self._allows(reader, char)
        if reader.mode != br.MUSIC:
            return lambda char: char in _MUSIC_SET and self._allows(reader, char)
        # in the music the reader treats the chars of each class alike: one test per class
        allows, memo = self._music_tester(reader), {}

        def test(char: str) -> bool:
            if char not in _MUSIC_SET:
                return False
            if char in _SHORTHANDS:  # they differ only in the decoration they add: one test of those allowed
                if not _shorthand_allowed(reader, reader.decorations, char):
                    return False
                key = _SHORTHANDS
            else:
                key = "A" if char in br.NOTE_LETTERS else char
            if key not in memo:
                memo[key] = allows(key if key != _SHORTHANDS else char)
            return memo[key]

        return test

    def allowed_ids(self, reader: BarReader) -> list[int]:
        """Allowed char ids at the reader's patch position (`reader.patch_pos`), EOS and BOS included."""
        if reader.mode == br.ENDED:
            return [EOS_ID]
        chars = self.allowed_chars(reader)
        ids = [ord(char) for char in chars]
        if (reader.mode == br.LINE_START or chars & {"|", ":"}) and self._eos_allowed(reader):
            ids.append(EOS_ID)
        at_body_line_start = reader.mode == br.LINE_START and reader.in_body and not reader.patch_pos
        if at_body_line_start and not reader.remaining:
            ids.append(BOS_ID)
        if at_body_line_start and reader.remaining == 0:
            ids = [BOS_ID]  # `[r:i/0]` announced the last line
        return sorted(ids)

    def allows_id(self, reader: BarReader, token: int) -> bool:
        """`token in allowed_ids(reader)`, for one id: the decoder checks its own choice first (cheap) and
        builds the whole mask only when that choice is refused."""
        if reader.mode == br.ENDED:
            return token == EOS_ID
        at_body_line_start = reader.mode == br.LINE_START and reader.in_body and not reader.patch_pos
        if token == BOS_ID:
            return at_body_line_start and not reader.remaining
        if at_body_line_start and reader.remaining == 0:
            return False
        if token == EOS_ID:
            barline_next = reader.mode == br.LINE_START or self.allows_char(reader, "|") or self.allows_char(reader, ":")
            return barline_next and self._eos_allowed(reader)
        return 0 <= token < 128 and self.allows_char(reader, chr(token))

    def id_tester(self, reader: BarReader) -> Callable[[int], bool]:
        """`allows_id(reader, token) and musical(reader, token)` for the many tokens a refused row's redraw
        tests one by one, memoised (the whole mask reuses the tests the redraw made): the chars share the
        work of `char_tester`, and in the music the note letters share one musical test."""
        chars = self.char_tester(reader)
        at_last_line_start = reader.mode == br.LINE_START and reader.in_body and not reader.patch_pos and reader.remaining == 0
        music, memo = reader.mode == br.MUSIC and reader.in_body, {}

        def test(token: int) -> bool:
            if not 3 <= token < 128 or at_last_line_start:  # PAD, BOS, EOS; only BOS after `[r:i/0]`'s line
                return self.allows_id(reader, token) and self.musical(reader, token)
            char = chr(token)
            key = "A" if music and char in br.NOTE_LETTERS else char
            if key not in memo:
                memo[key] = chars(char) and self.musical(reader, ord(key))
            return memo[key]

        return test

    def tested_ids(self, tester: Callable[[int], bool]) -> list[int]:
        """The ids an `id_tester` allows (a refused row's whole mask): BOS, EOS and the printable chars and
        newline, as no other id is ever allowed."""
        return [token for token in _MASK_IDS if tester(token)]

    def advance(self, reader: BarReader, token: int) -> BarReader | None:
        """The reader after `token` where `allows_id(reader, token) and musical(reader, token)`, else None: the
        decoder's test of its own choice steps one copy of the reader for both tests, and keeps it."""
        char = token_char(token)
        if 3 <= token < 128 and self._plain(reader, char):
            after = self._advance(reader, char)
            return after if after is not None and self._musical_after(reader, after) else None
        if not (self.allows_id(reader, token) and self.musical(reader, token)):
            return None
        after = reader.copy()
        after.feed(char)
        return after

    def allows_char(self, reader: BarReader, char: str) -> bool:
        """`char in allowed_chars(reader)`, for one char."""
        if reader.mode == br.ENDED or (reader.mode == br.LINE_START and reader.patch_pos):
            return False
        if reader.mode in (br.QUOTE, br.FIELD, br.DECORATION, br.HEADER) or not reader.in_body:
            return char in _PRINTABLE and self._allows(reader, char)
        if reader.mode != br.MUSIC:
            return char in _MUSIC_CHARS and self._allows(reader, char)
        if char in _MUSIC_SINGLES:
            return self._allows(reader, char)
        chars = next((chars for chars in _MUSIC_CLASSES if char in chars), None)
        if chars is _SHORTHANDS:  # alike but for the decoration they add
            return _shorthand_allowed(reader, reader.decorations, char) and self._allows(reader, char)
        return chars is not None and self._allows(reader, chars[0])

    def _plain(self, reader: BarReader, char: str) -> bool:
        """Whether `allows_char(reader, char)` is `_allows(reader, char)` (a note letter's: its class's test,
        which the reader makes alike for every letter), with no rule of `allows_id` before it."""
        if reader.mode == br.ENDED or (reader.mode == br.LINE_START and (reader.patch_pos or (reader.in_body and reader.remaining == 0))):
            return False
        if reader.mode in (br.QUOTE, br.FIELD, br.DECORATION, br.HEADER) or not reader.in_body:
            return char in _PRINTABLE_SET
        if reader.mode != br.MUSIC or char not in _SHORTHANDS:
            return char in _MUSIC_SET
        return _shorthand_allowed(reader, reader.decorations, char)

    def musical(self, reader: BarReader, token: int) -> bool:
        """Whether an allowed `token` keeps the bar's rhythm musical: it commits no element shorter than a 16th
        (or than the shortest the piece already writes) unless that element ends the bar or lands on the
        beat, and leaves the open element a length that is musical in that sense. Where the model falls
        short of a bar the exact mask alone leaves only tiny lengths (runs of 32nds and 64ths at bar ends);
        the chooser refuses unmusical choices and redraws from `musical_ids`."""
        if not 0 <= token < 128 or self._rhythm(reader) is None:
            return True
        clone = reader.copy()
        return not clone.step(chr(token)) or self._musical_after(reader, clone)

    def _rhythm(self, reader: BarReader) -> tuple[mpq, mpq] | None:
        """(the bar's target, the metre) where `musical` judges the next char, else None."""
        if reader.mode != br.MUSIC or reader.element is None or reader.chord_stage or reader.element_scale != 1:
            return None
        target, metre = self._requirement(reader)[0], reader.metre
        return None if target is None or metre is None else (target, metre)

    def _musical_after(self, reader: BarReader, clone: BarReader) -> bool:
        """`musical` of the char that took `reader` to `clone`."""
        rhythm = self._rhythm(reader)
        if rhythm is None:
            return True
        target, metre = rhythm
        shortest = min(SIXTEENTH, reader.shortest)
        beat = max(4, metre.denominator)  # beats per whole note
        if clone.closed_count > reader.closed_count and clone.last_written is not None and clone.last_written < shortest:
            if clone.pos != target and (clone.pos * beat).denominator != 1:
                return False
        if clone.element is None or clone.chord_stage or clone.element_scale != 1 or clone.mode != br.MUSIC:
            return True
        return _musical_state(target, clone.pos, clone.unit, clone.length.key(), clone.broken_next,
                              clone.broken_base if clone.broken_open else None, shortest, beat)

    def musical_ids(self, reader: BarReader, ids: Sequence[int]) -> list[int]:
        """The `musical` ones of allowed `ids`, or all of them where none is."""
        return [token for token in ids if self.musical(reader, token)] or list(ids)

    # ------------------------------------------------------------------------------- internals
    def _music_tester(self, reader: BarReader):
        """`_allows` for one music-mode reader, sharing the work of the chars that end its open element:
        the element is committed once, and the chars that then last nothing (spaces, slurs, decorations,
        annotations...) share one feasibility test."""
        if reader.voice is None or reader.chord_stage:
            return lambda char: self._allows(reader, char)
        base = reader.committed()
        base_ok = base is not None and (not base.segment_open or self._feasible(base))

        def allows(char: str) -> bool:
            if char in _CONTINUING:
                return self._allows(reader, char)
            return base is not None and self._allows(reader, char, base, None if char in _TIMED else base_ok)

        return allows

    def _allows(self, reader: BarReader, char: str, start: BarReader | None = None, settled: bool | None = None) -> bool:
        """Whether `char` may follow `reader`. `start`: `reader` with its open element committed, stepped
        instead of it (for a char that commits the element); `settled`: whether the bar can be completed
        from `start`, for a char that leaves its duration state as it is."""
        return self._advance(reader, char, start, settled) is not None

    def _advance(self, reader: BarReader, char: str, start: BarReader | None = None, settled: bool | None = None) -> BarReader | None:
        """`_allows`, giving the copy of `start` (default `reader`) that stepped `char` where it is allowed."""
        clone = (start if start is not None else reader).copy()
        if not clone.step(char) or not self._written_subset(reader, char, clone):
            return None
        if clone.mode == br.LINE_START or not clone.in_body:
            return clone
        if len(clone.line_voices) > len(reader.line_voices):
            # a voice's bar ends: on its length, and never inside a tuplet or a broken pair (a short first or
            # last bar could otherwise end with `(3EB/|`, whose length abctoolkit cannot count)
            unfinished = reader.tuplet_left or (reader.broken_open and reader.element is None)
            closes = not unfinished and self._bar_closes(reader, clone.line_voices[-1][1])
            return clone if closes else None
        allowed = settled if settled is not None else not clone.segment_open or self._feasible(clone)
        return clone if allowed else None

    def _written_subset(self, reader: BarReader, char: str, clone: BarReader) -> bool:
        """The restrictions of the written subset that the reader does not make (see the docstring)."""
        mode = clone.mode
        if not reader.in_body and reader.mode in (br.LINE_START, br.HEADER):
            return _header_allows(reader, char)
        if clone.closed_count > reader.closed_count:  # the char commits an element (before any early return)
            if not length_complete(*reader.length.key()):
                return False
            if reader.element != "measure_rest" and not _suffix_note_value(reader.unit, reader.length.key()):
                return False
            if clone.pair_closed and clone.last_written != clone.broken_base:
                return False  # a broken pair of unequal lengths: the BAE's durations read it otherwise than abc2xml
        if (reader.chord_stage and reader.stage != 1 and (char in br.NOTE_LETTERS or char in br.ACCIDENTALS)
                and reader.chord_notes >= CHORD_NOTES):
            return False  # no new note (nor its accidentals) in a full chord
        if char in br.ACCIDENTALS and clone.stage == 1 and reader.mode != br.GRACE:
            return clone.accidentals in ("^", "^^", "_", "__", "=")  # one accidental (doubled at most)
        if reader.element == "chord" and reader.chord_stage and not (char in "]^_=',-" or char in br.NOTE_LETTERS):
            return False  # chords hold notes only
        if reader.mode == br.MUSIC and char in br.OCTAVE_MARKS and clone.stage == 2 and not _pitch_allowed(clone.pitch):
            return False
        if reader.mode == br.QUOTE:
            return annotation_allows(reader.buffer, char)
        if reader.mode == br.MUSIC and reader.last == "!" and reader.decorations and reader.decorations[-1] in JUMPS:
            return char in "|:"  # a jump stands right before its bar line
        if char == "-" and reader.mode in (br.MUSIC, br.PAREN) and not reader.chord_stage:
            return reader.element in ("note", "chord") and reader.stage >= 2  # a tie right after its note or chord
        if char == ")" and reader.mode in (br.MUSIC, br.PAREN) and not reader.slur_depth():
            return False  # no slur to close
        if reader.mode == br.DECORATION and char == reader.closer:
            return reader.buffer in self._permitted_decorations(reader)
        if mode == br.DECORATION:
            if clone.closer != "!":
                return False
            return any(name.startswith(clone.buffer) for name in self._permitted_decorations(reader if reader.mode == mode else clone))
        if char in _SHORTHANDS and reader.mode == br.MUSIC and not _shorthand_allowed(reader, clone.decorations[:-1], char):
            return False
        if char in "\t`y&%$*;@#?\\~HL" or (char == " " and reader.last == " "):
            return False  # (one space at a time: a run of spaces would never end a bar; the BAE cannot read `~`)
        if char == '"' and mode == br.QUOTE and not decoration_allowed(
                br.ANNOTATION, clone.decorations, started=True, line=reader.body_line, marks=reader.marks, open_span=None):
            return False  # one annotation a note
        if char == '"' and mode == br.QUOTE and not self._allows(reader, "c"):
            # at the bar's end only a text direction, before a double, final or repeat bar line, in one bar line
            return self._allows(reader, "|") and not any(name == br.ANNOTATION and line != reader.body_line
                                                         for name, line in reader.marks)
        if reader.mode == br.MUSIC and reader.segment_open and (char in "({" or char in br.DECORATION_SHORTHANDS):
            if not self._allows(reader, "c"):
                return False  # slurs, grace notes and shorthand decorations need a note after them
        if clone.element is not None and not length_multipliers(*clone.length.key()):
            return False
        if clone.element is not None and clone.chord_stage and clone.length.key() != ("", 0, ""):
            return False  # chord notes without inner lengths
        if clone.element == "measure_rest":  # abctoolkit counts `Z` as one unit, not a bar
            return False
        if clone.element == "measure_rest" and clone.length.num:
            return False
        if mode == br.QUOTE:
            return char not in "|[]" and not (char == ":" and reader.quote_prev == ":")
        if reader.mode == br.GRACE:
            return (char in _GRACE_CHARS and len(reader.buffer) < 8) or char == "}" or (char == "/" and not reader.buffer)
        if mode == br.TUPLET:
            return reader.tuplet_left == 0 and not reader.broken_open and bool(_TUPLET_SPEC.match(clone.buffer))
        if mode == br.FIELD_NAME:
            return self._field_allowed(reader, clone)
        if mode == br.FIELD:
            return self._field_text_allowed(clone)
        if char in "<>":
            return clone.last_scale == 1 and clone.tuplet_left == 0 and not clone.pair_closed and clone.broken_count <= 2
        if mode == br.BARLINE:  # a closing bar line the patchilizer splits on (no left bar lines)
            if reader.mode != br.BARLINE and not ends_at_barline(clone.decorations):
                return False  # a note's decorations wait for the note
            jump = any(name in JUMPS or name == br.ANNOTATION for name in clone.decorations)
            return not clone.segment_open and any(b.startswith(clone.buffer) for b in (BARLINES_AFTER_JUMP if jump else _BARLINES))
        if reader.mode == br.BARLINE and (reader.buffer not in _BARLINES or reader.buffer == "|" and any(
                name in JUMPS or name == br.ANNOTATION for name in reader.decorations)):
            return False
        if char == "[" and reader.mode == br.MUSIC and reader.segment_open:  # a chord, or a field at the bar's start
            return (not reader.started and reader.element is None) or self._allows(reader, "c")
        if mode == br.ENDING:
            return clone.ending_closes and reader.mode == br.BARLINE
        if reader.mode in (br.BARLINE, br.ENDING, br.SEGMENT_END) and char in "[\n":
            # a bar line that began a patch starts the next voice's bar; one inside a patch ends the line
            split = reader.barline_after_eos or reader.barline_pos == 0
            if char == "[":  # the next voice's bar, if one can still come in this line
                return split and (not reader.declared or any(self._voice_allowed(reader, v) for v in reader.declared))
            return not reader.barline_after_eos
        if reader.mode == br.FIELD and char == "]" and reader.field in "KML":
            return _FIELD_VALUES[reader.field](reader, reader.buffer.lstrip(), True)
        if reader.mode == br.FIELD and clone.segment_open and reader.field == "V":
            return self._voice_allowed(reader, clone.voice)
        if reader.mode == br.FIELD and reader.field == "r" and clone.remaining is not None:
            return reader.prev_remaining is None or clone.remaining == reader.prev_remaining - 1
        return True

    def _permitted_decorations(self, reader: BarReader) -> list[str]:
        """The decorations that may be written now (`reader` reads a `!...!` name; see `written_subset`):
        a jump only where the bar may end right after it, the others where a note can still follow (or, for
        `BAR_END` ones, the bar line). Kept on the reader while the name is typed: the chars of a name
        change nothing else, and this is the costliest test of a char in a name."""
        if reader.mode == br.DECORATION and reader.decoration_names is not None:
            return reader.decoration_names
        after = reader.copy()
        after.mode = br.MUSIC  # as after the name's closing `!`
        candidates = permitted_decorations(reader.decorations, reader.started or reader.element is not None,
                                           reader.body_line, reader.marks, _open_kinds(reader))
        fits = {}

        def fit(char: str) -> bool:
            if char not in fits:
                fits[char] = self._allows(after, char)
            return fits[char]

        names = [name for name in candidates if (fit("|") if name in JUMPS else fit("c") or (name in BAR_END and fit("|")))]
        if reader.mode == br.DECORATION:
            reader.decoration_names = names
        return names

    def _field_allowed(self, reader: BarReader, clone: BarReader) -> bool:
        if not reader.segment_open:
            if clone.field == "V":  # only where a declared voice can still come in this line
                if reader.voice is None and not reader.line_voices and reader.remaining is None and reader.prev_remaining is not None:
                    return False  # a line after one with `[r:i/j]` starts with its own
                return not reader.declared or any(self._voice_allowed(reader, voice) for voice in reader.declared)
            return (clone.field == "r" and clone.voice is None and reader.mode == br.BRACKET
                    and reader.remaining is None and not reader.line_voices)  # one `[r:i/j]`, first in its line
        return clone.field in _FIELD_NAMES_IN_BAR and not reader.started and reader.element is None

    def _field_text_allowed(self, clone: BarReader) -> bool:
        if clone.field == "V":  # the digits of a voice that may come next
            if not clone.declared:
                return clone.buffer.isdigit() or clone.buffer == ""
            return any(voice.startswith(clone.buffer) and self._voice_allowed(clone, voice) for voice in clone.declared)
        if clone.field == "r":  # j counts down by one from the previous line
            index, slash, remaining = clone.buffer.partition("/")
            if not re.match(r"^\d{0,4}$", index) or (slash and not re.match(r"^\d{1,4}/\d{0,4}$", clone.buffer)):
                return False
            return clone.prev_remaining is None or str(clone.prev_remaining - 1).startswith(remaining)
        check = _FIELD_VALUES.get(clone.field)  # inline `[K:]`, `[M:]`, `[L:]`: values abc2xml reads
        return check is not None and check(clone, clone.buffer.lstrip(), False)

    def _eos_allowed(self, reader: BarReader) -> bool:
        """EOS ends a patch after a newline, or before a bar line that the next voice's bar follows (so
        only while a declared voice can still come after the current one)."""
        if not reader.copy().step(br.EOS_CHAR):
            return False
        if reader.mode == br.LINE_START or not reader.declared or reader.voice not in reader.declared:
            return True
        current = reader.declared.index(reader.voice)
        return any(self._voice_allowed(reader, voice) for voice in reader.declared[current + 1:])

    def _voice_allowed(self, reader: BarReader, voice: str) -> bool:
        if not reader.declared:
            return True
        if voice not in reader.declared:
            return False
        previous = [reader.declared.index(v) for v, _ in reader.line_voices if v in reader.declared]
        return not previous or reader.declared.index(voice) > max(previous)

    def _requirement(self, reader: BarReader) -> tuple[mpq | None, bool]:
        """(target length or None, exact?) of the current voice's bar."""
        if reader.line_voices:
            return reader.line_voices[0][1], True
        metre = reader.metre
        if metre is None:
            return None, False
        edge = reader.body_line == 0 or reader.remaining == 0
        return metre, not (self.short_bars == "anywhere" or edge)

    def _bar_closes(self, reader: BarReader, length: mpq) -> bool:
        target, exact = self._requirement(reader)
        if length <= 0 or not _on_grid(length):
            return False
        if target is None:
            return True
        return length == target if exact else length <= target

    def _feasible(self, reader: BarReader) -> bool:
        """Whether the open voice bar can still be completed to its target (see the module docstring).
        A pure function of the bar's duration state, so it is cached on that state (`_feasible_state`):
        most chars tested at one step leave that state as it was."""
        target = self._requirement(reader)[0]
        if target is None:
            return True
        if reader.element is not None:
            if reader.element == "measure_rest":
                unit, key = reader.metre, None
            else:
                unit, key = reader.unit, ("", 0, "") if reader.element == "chord" and reader.chord_stage else reader.length.key()
            return _feasible_state(target, reader.pos, unit, key, reader.element_scale, reader.broken_next,
                                   reader.tuplet_left, reader.tuplet_factor, reader.broken_base if reader.broken_open else None)
        if reader.broken_open or reader.tuplet_left or reader.mode == br.TUPLET:
            left, factor = reader.tuplet_left, reader.tuplet_factor
            if reader.mode == br.TUPLET:
                p, q, r = _tuplet_defaults(reader.buffer)
                factor, left = mpq(q, p), r
            return _feasible_state(target, reader.pos, reader.unit, ("", 0, ""), factor if left else WHOLE_NOTE,
                                   reader.broken_next, max(left - 1, 0), factor, reader.broken_base if reader.broken_open else None)
        return reader.pos <= target and _on_grid(reader.pos)


_FEASIBLE: dict[tuple, bool] = {}


def _feasible_state(target: mpq, pos: mpq, unit: mpq, key: tuple[str, int, str] | None, scale: mpq,
                    broken: mpq, left: int, factor: mpq, required: mpq | None) -> bool:
    """Whether, from `pos`, an element of a raw length among `grid_lengths(unit, key)` (a measure rest: key
    None, its length `unit`; the second of a broken pair: only `required`, the first's) scaled by
    `scale * broken`, then `left` more tuplet elements of factor `factor`, can end on the grid at or before
    `target`. Memoised: most chars tested at one step leave these as they were."""
    memo_key = (target, pos, unit, key, scale, broken, left, factor, required)
    found = _FEASIBLE.get(memo_key)
    if found is None:
        if len(_FEASIBLE) >= 1 << 16:
            _FEASIBLE.clear()
        found = _FEASIBLE[memo_key] = _search_feasible(target, pos, unit, key, scale * broken, left, factor, required)
    return found


def _search_feasible(target: mpq, pos: mpq, unit: mpq, key: tuple[str, int, str] | None, scale: mpq,
                     left: int, factor: mpq, required: mpq | None) -> bool:
    values = (unit,) if key is None else grid_lengths(unit, key)
    for raw in values if required is None else [value for value in values if value == required]:
        end = pos + raw * scale
        if end > target:
            return False
        if not left:
            if _on_grid(end):
                return True
            continue
        step = factor * GRID
        for count in range(left, left + (factor / GRID).denominator + 1):
            total = end + step * count
            if total > target:
                break
            if _on_grid(total):
                return True
    return False


_MUSICAL: dict[tuple, bool] = {}


def _musical_state(target: mpq, pos: mpq, unit: mpq, key: tuple[str, int, str], broken: mpq,
                   required: mpq | None, shortest: mpq, beat: int) -> bool:
    """Whether the open element (suffix `key`) can still get a musical length (see `BarConstraint.musical`).
    Memoised, as `_feasible_state`."""
    memo_key = (target, pos, unit, key, broken, required, shortest, beat)
    found = _MUSICAL.get(memo_key)
    if found is None:
        if len(_MUSICAL) >= 1 << 16:
            _MUSICAL.clear()
        found = _MUSICAL[memo_key] = _search_musical(target, pos, unit, key, broken, required, shortest, beat)
    return found


def _search_musical(target: mpq, pos: mpq, unit: mpq, key: tuple[str, int, str], broken: mpq,
                    required: mpq | None, shortest: mpq, beat: int) -> bool:
    for raw in grid_lengths(unit, key):
        end = pos + raw * broken
        if end > target:
            return False
        if (_on_grid(end) and (required is None or raw == required)
                and (raw >= shortest or end == target or (end * beat).denominator == 1)):
            return True
    return False


def _pitch_allowed(pitch: str) -> bool:
    """Whether a letter with its octave marks (`C,,`, `c'`) stays in the written range (`OCTAVE_COMMAS`)."""
    letter, marks = pitch[0], pitch[1:]
    if letter.isupper():
        return set(marks) <= {","} and len(marks) <= OCTAVE_COMMAS
    return set(marks) <= {"'"} and len(marks) <= OCTAVE_APOSTROPHES


def _open_kinds(reader: BarReader) -> frozenset[str]:
    return frozenset(kind for voice, kind in reader.spans if voice == reader.voice)


def _shorthand_allowed(reader: BarReader, pending: tuple[str, ...], char: str) -> bool:
    """`decoration_allowed` for a shorthand (`.` staccato, `T` trill, `S` segno...) after `pending`."""
    name = br.SHORTHAND_NAMES[char]
    return decoration_allowed(name, pending, started=reader.started or reader.element is not None, line=reader.body_line,
                              marks=reader.marks, open_span=span_open(name, _open_kinds(reader)))


def _header_allows(reader: BarReader, char: str) -> bool:
    """Header lines are `%` comments, one well-formed `%%score` line, and the fields Q L M K V with
    values abc2xml reads (checked as they are typed, so a line can always be finished); the body starts
    (`[`) once every voice of the `%%score` line is declared; no empty line (it would end the tune)."""
    if reader.mode == br.LINE_START:
        if char == "[":
            return bool(reader.declared) and (reader.score_voices is None or set(reader.declared) == set(reader.score_voices))
        if char == "V":  # only while a voice can still be declared
            return _next_voice(reader) is not None
        return char == "%" or char in _HEADER_FIELDS
    line = reader.buffer
    if len(line) == 1 and line != "%":
        return char == ":"
    if char != "\n" and len(line) >= HEADER_LINE_CHARS:
        return False
    if line.startswith("%"):
        if line.startswith("%%") or (line + char).startswith("%%"):
            text = line + char if char != "\n" else line
            if not "%%score".startswith(text[:7]) or reader.score_voices is not None:
                return False
            return len(text) <= 7 or _score_line(text[7:], complete=char == "\n")
        return char not in "[]"  # a comment that cannot pass for a body line
    if char in "[]":
        return False  # a header field that cannot pass for a body line
    name, value = line[0], line[2:] + (char if char != "\n" else "")
    check = _FIELD_VALUES.get(name)
    if check is None:
        return True
    return check(reader, value if name == "V" else value.lstrip(), char == "\n")


def _key_value(reader: BarReader, value: str, complete: bool) -> bool:
    return value in _KEYS if complete else any(key.startswith(value) for key in _KEYS)


def _metre_value(reader: BarReader, value: str, complete: bool) -> bool:
    if value in ("C", "C|") or (not complete and value in ("", "C")):
        return True
    match = re.fullmatch(r"(\d{0,2})(?:(/)(\d{0,2}))?", value)
    if not match:
        return False
    if match.group(1) and (int(match.group(1)) > 16 or match.group(1).startswith("0")):
        return False
    if not complete:  # (a slash only after the beats: `/4` could never be finished)
        return (not match.group(2) or bool(match.group(1))) and (not match.group(3) or match.group(3) in ("1", "2", "4", "8", "16", "32", "3"))
    return (bool(match.group(1)) and 0 < int(match.group(1)) <= 16 and match.group(2) == "/"
            and match.group(3) in ("1", "2", "4", "8", "16", "32"))  # a metre a player reads


def _unit_value(reader: BarReader, value: str, complete: bool) -> bool:
    units = ("1/1", "1/2", "1/4", "1/8", "1/16", "1/32", "1/64")
    return value in units if complete else any(unit.startswith(value) for unit in units)


def _tempo_value(reader: BarReader, value: str, complete: bool) -> bool:
    if complete:
        return bool(re.fullmatch(r"\d/\d{1,2}=\d{1,3}", value))
    return bool(re.fullmatch(r"(\d(/(\d{1,2}(=\d{0,3})?)?)?)?", value))


def _voice_value(reader: BarReader, value: str, complete: bool) -> bool:
    """The next voice of the `%%score` line (without one, the only voice `1`), its clef and names."""
    return voice_line_allows(value, complete, _next_voice(reader))


def _next_voice(reader: BarReader) -> str | None:
    voices = reader.score_voices if reader.score_voices is not None else ("1",)
    return voices[len(reader.declared)] if len(reader.declared) < len(voices) else None


_KEYS = frozenset(
    [f"{tonic}{mode}" for tonic in ("C", "G", "D", "A", "E", "B", "F#", "C#", "F", "Bb", "Eb", "Ab", "Db", "Gb", "Cb",
                                     "G#", "D#", "A#")
     for mode in ("", "m", "min", "maj", "dor", "mix", "lyd", "phr", "loc", "aeo", "ion")] + ["none"])
_FIELD_VALUES = {"K": _key_value, "M": _metre_value, "L": _unit_value, "Q": _tempo_value, "V": _voice_value}


@lru_cache(maxsize=1 << 14)
def _score_line(text: str, complete: bool) -> bool:
    """A `%%score` voice list (typed so far, or `complete`): voice numbers, each once, in balanced `[ ]`,
    `{ }`, `( )` groups at most two deep, `|` between voices or groups, single spaces; typed so far, it can
    still be finished inside the header line's `HEADER_LINE_CHARS` (its groups closed, the voice numbers it
    skipped added), so a long line never leaves the decoder without a way on. Memoised: a redraw tests a
    few dozen chars after each prefix, and pieces of one ensemble type the same lines."""
    if not re.fullmatch(r"[\d \[\]{}()|]*", text) or "  " in text:
        return False
    typing = "" if complete else re.search(r"\d*$", text).group(0)
    voices = re.findall(r"\d+", text[: len(text) - len(typing)])
    if (complete and not voices) or not score_line_allows(voices, typing, complete):
        return False
    stack, previous = [], ""
    for char in text.replace(" ", ""):
        if char in "[{(":
            if len(stack) == 2:
                return False
            stack.append("]})"["[{(".index(char)])
        elif char in "]})":
            if not stack or stack.pop() != char or previous in "[{(|":
                return False  # unbalanced, or an empty group
        elif char == "|" and (not previous or previous in "[{(|"):
            return False  # a bar between two voices or groups
        previous = char
    if complete:
        return not stack and previous not in "|"
    numbers = {int(voice) for voice in voices} | ({int(typing)} if typing else set())
    if previous in "[{(|" and previous and len(numbers) >= MAX_VOICES:
        return False  # a group or a bar line that no voice could follow
    missing = sum(len(str(n)) + 1 for n in range(1, max(numbers, default=0) + 1) if n not in numbers)
    return len("%%score") + len(text) + len(stack) + missing + 3 <= HEADER_LINE_CHARS


def _tuplet_defaults(spec: str) -> tuple[int, int, int]:
    parts = (spec.split(":") + ["", ""])[:3]
    p = int(parts[0])
    q = int(parts[1]) if parts[1] else (3 if p in (2, 4, 8) else 2)
    return p, q, int(parts[2]) if parts[2] else p


def logits_mask(allowed: Sequence[Iterable[int]], vocab_size: int = 128, device=None):
    """A [B, vocab_size] boolean tensor, True where the row's id is allowed (add -inf where False)."""
    import torch

    mask = torch.zeros((len(allowed), vocab_size), dtype=torch.bool)
    for row, ids in enumerate(allowed):
        mask[row, list(ids)] = True
    return mask.to(device) if device is not None else mask
