"""An incremental reader of NotaGen's interleaved ABC that knows, after every character, how full the bar is.

NotaGen writes `[r:i/j][V:1]abc|[V:2]def|...` one bar line-up per line, character by character. To keep
its output bar-exact (`engine.notagen.bar_constraint` masks the char decoder's logits) the generator
needs, per batch row, the length of the current voice's bar so far and whether a character can still
lead to a bar of the right length. `BarReader.feed(char)` follows the text char by char in O(1) amortised
time (header lines are buffered and parsed at their newline; nothing in the body is re-parsed).

Durations are exact rationals of a whole note, `gmpy2.mpq` (the arithmetic of `fractions.Fraction`, with
which they compare and mix, done in C: the constraint makes several per char it tests, and `Fraction`'s
pure-Python operations, about 1 us each, were its largest cost; `bench/constraint_replay.py`), and follow
abc2xml, the converter that reads the generated text back (it is not always the ABC standard):
  * unit length from `L:` (default 1/16 below metre 3/4, else 1/8), metre from `M:` (`C` = 4/4,
    `C|` = 2/2, `none` = no bar target); both per voice, changed by inline `[L:]` / `[M:]` fields;
  * note/rest lengths `c`, `c2`, `c/`, `c//`, `c/4`, `c3/2`; rests `z`, invisible rests `x`;
    `Z`/`X` are multi-measure rests, `Zn` is n bars of the voice's metre;
  * broken rhythm `>` `<` `>>` `<<` changes the previous note/chord/rest and the next one; as in abc2xml,
    three or more signs change nothing and in `a>b>c` the second sign pairs `a` (again) with `c`;
  * tuplets `(p`, `(p:q`, `(p:q:r`, `(p::r`: the next r notes, rests or chords (grace notes do not count)
    last q/p; q defaults to 3 for p in 2, 4, 8 and to 2 otherwise (abc2xml ignores the compound-metre
    rule of the standard); a new tuplet replaces an unfinished one (abc2xml does not nest them);
  * chords `[CEG]2`: the chord lasts its first note's inner length times its outer length (decorations
    such as `!courtesy!` may sit inside);
  * no duration: grace groups `{...}` / `{/...}` (their content is skipped), ties `-`, slurs `(` `)`, decorations `!...!` `+...+`
    and the shorthands `.~HLMOPSTuv`, annotations and chord symbols `"..."`, spaces, `` ` `` and `y`;
  * bar lines: any run of `|` and `:` (with `[|`, `|]`), followed by an ending number (`|1`, `:|2`,
    `|1,2`); `[1` starts an ending; a bar line before the first note of a voice's bar is a left bar line
    (`[V:1]|:abc|`) and does not close the bar;
  * `[r:i/j]` annotations (j = bar lines still to come), `[V:n]` voice switches, `[K:]`, `[I:]` and
    other inline fields (read, no duration).

It refuses (`AbcRefused`) what it cannot measure: voice overlays `&`, comments and header fields inside
the body, control characters, unterminated constructs at a newline, malformed lengths or fields. Each
closed voice bar is appended to `bars` as a `VoiceBar` when `record` is true.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gmpy2 import mpq

from engine.notagen.patchilizer import PATCH_SIZE

NOTE_LETTERS = frozenset("abcdefgABCDEFG")
REST_LETTERS = frozenset("zx")
MEASURE_RESTS = frozenset("ZX")
ACCIDENTALS = frozenset("^_=")
OCTAVE_MARKS = frozenset("',")
DIGITS = frozenset("0123456789")
DECORATION_SHORTHANDS = frozenset(".~HLMOPSTuv")
SHORTHAND_NAMES = {".": "staccato", "~": "roll", "H": "fermata", "L": "accent", "M": "lowermordent", "O": "coda",
                   "P": "uppermordent", "S": "segno", "T": "trill", "u": "upbow", "v": "downbow"}
"""The decoration each shorthand stands for (ABC 2.1), so that `decorations` names both forms alike."""
IGNORED = frozenset(" \t`y")
BARLINE_CHARS = frozenset("|:")
ANNOTATION = '"'
"""How `decorations` counts an annotation (it belongs to the next note as decorations do)."""
PIECE_MARKS = frozenset(("D.C.", "D.S.", "fine", "dacapo", "dacoda", "segno", "coda"))
"""Jumps and their targets: `marks` records on which body line they were written."""
SPAN_STARTS = {"<(": "<", "crescendo(": "<", ">(": ">", "diminuendo(": ">", "ped": "ped"}
SPAN_ENDS = {"<)": "<", "crescendo)": "<", ">)": ">", "diminuendo)": ">", "ped-up": "ped"}
"""Decorations that open and close a hairpin or a pedal: `spans` holds those open per voice."""
EOS_CHAR = "\x02"
BOS_CHAR = "\x01"

WHOLE = mpq(1)


class AbcRefused(ValueError):
    """A character the reader cannot follow (see the module docstring for what is refused)."""


@dataclass(frozen=True)
class VoiceBar:
    """One voice's bar of a bar line-up: body line index (0-based), voice id, length and the voice's metre
    (whole notes; None for `M:none`)."""

    line: int
    voice: str
    length: mpq
    metre: mpq | None


@dataclass(frozen=True)
class VoiceSettings:
    """What the reader needs of a voice: its unit length and its metre (None for `M:none`)."""

    unit: mpq
    metre: mpq | None


def parse_metre(text: str) -> mpq | None:
    """Bar length (whole notes) of an `M:` value, None for `none`; raises AbcRefused."""
    text = text.strip()
    if text in ("C", "C|", ""):
        return mpq(1)
    if text.lower() == "none":
        return None
    try:
        numerator, denominator = text.split("/")
        top = sum(int(part) for part in numerator.replace("(", "").replace(")", "").split("+"))
        metre = mpq(top, int(denominator))
    except (ValueError, ZeroDivisionError) as exc:
        raise AbcRefused(f"unreadable metre {text!r}") from exc
    if metre <= 0:
        raise AbcRefused(f"unreadable metre {text!r}")
    return metre


def parse_unit(text: str) -> mpq:
    """Unit length of an `L:` value; raises AbcRefused."""
    try:
        unit = mpq(text.strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise AbcRefused(f"unreadable unit length {text!r}") from exc
    if unit <= 0:
        raise AbcRefused(f"unreadable unit length {text!r}")
    return unit


def default_unit(metre: mpq | None) -> mpq:
    """The standard's default L: 1/16 when the metre is below 3/4, else 1/8."""
    return mpq(1, 16) if metre is not None and metre < mpq(3, 4) else mpq(1, 8)


def broken_factors(sign: str, count: int) -> tuple[mpq, mpq]:
    """(factor of the previous element, factor of the next) for `count` `>` or `<` signs, as abc2xml."""
    if count > 2:
        return WHOLE, WHOLE
    long, short = (mpq(3, 2), mpq(1, 2)) if count == 1 else (mpq(7, 4), mpq(1, 4))
    return (long, short) if sign == ">" else (short, long)


@lru_cache(maxsize=1024)
def suffix_value(num: str, slashes: int, den: str) -> mpq:
    """The multiplier of the unit that a length suffix stands for (memoised: the reader asks at every commit)."""
    if den:
        return mpq(int(num) if num else 1, int(den))
    return WHOLE if not num and not slashes else mpq(int(num) if num else 1, 2**slashes)


def _times(value: mpq, factor: mpq) -> mpq:
    return value if factor is WHOLE else value * factor


class Length:
    """A length suffix being typed: `num`, then slashes, then a denominator (`3/2`, `//`, `/4`)."""

    __slots__ = ("num", "slashes", "den")

    def __init__(self) -> None:
        self.num = ""
        self.slashes = 0
        self.den = ""

    def accepts(self, char: str) -> bool:
        """Whether `char` continues the suffix (and takes it)."""
        if char in DIGITS:
            if self.slashes == 0:
                if not self.num and char == "0":
                    return False
                self.num += char
                return True
            if self.slashes == 1:
                if not self.den and char == "0":
                    return False
                self.den += char
                return True
            return False
        if char == "/" and not self.den:
            self.slashes += 1
            return True
        return False

    @property
    def value(self) -> mpq:
        return suffix_value(self.num, self.slashes, self.den)

    def copy(self) -> Length:
        clone = Length.__new__(Length)
        clone.num, clone.slashes, clone.den = self.num, self.slashes, self.den
        return clone

    def key(self) -> tuple[str, int, str]:
        return self.num, self.slashes, self.den


# Body modes. The music mode has sub-state (the open element) in the reader's fields.
HEADER, LINE_START, MUSIC, BRACKET, FIELD_NAME, FIELD, QUOTE, DECORATION, GRACE, PAREN, TUPLET, BARLINE, \
    ENDING, SEGMENT_END, ENDED = range(15)


class BarReader:
    """Follows interleaved ABC char by char (one instance per batch row); see the module docstring.

    Public state for the constraint: `mode`, `voice`, `pos` (length of the voice's bar so far, without the
    element being typed), `element` (kind of the open element: None, "note", "rest", "measure_rest",
    "chord"), `length` (its suffix), `line_voices` (voice bars closed in this body line).
    """

    def __init__(self, record: bool = False) -> None:
        self.record = record
        self.bars: list[VoiceBar] = []
        self.mode = LINE_START
        self.in_body = False
        self.buffer = ""  # header line, field text, tuplet spec, bar line, ending being read
        self.field = ""  # the inline field's name
        self.closer = ""  # the char that ends a decoration
        self.settings: dict[str, VoiceSettings] = {}  # per voice id, after header and inline fields
        self.header_metre: mpq | None = mpq(1)
        self.header_unit: mpq | None = None
        self.header_settings = VoiceSettings(default_unit(self.header_metre), self.header_metre)  # of header_metre/_unit
        self.declared: tuple[str, ...] = ()  # voice ids declared by `V:` header lines, in order
        self.score_voices: tuple[str, ...] | None = None  # the voice ids of a `%%score` line, in order
        self.body_line = -1  # index of the body line being read
        self.remaining: int | None = None  # j of the line's `[r:i/j]`
        self.prev_remaining: int | None = None  # j of the previous body line
        self.patch_pos = 0  # chars of the current patch so far (the patchilizer's split, see `step`)
        self.barline_pos = 0  # patch position of the last closing bar line's first char
        self.barline_after_eos = False  # that bar line started a patch after an EOS
        self.voice: str | None = None
        self.line_voices: tuple[tuple[str, mpq], ...] = ()
        self.after_eos = False
        self.last = ""  # the last char read
        self.segment_open = False  # between `[V:n]` and the bar line that closes its bar
        self.ending_closes = False  # the ending number follows a closing bar line (not `[1`)
        self.shortest = WHOLE  # the shortest written length outside tuplets read so far (the piece's finest unit)
        self.marks: frozenset[tuple[str, int]] = frozenset()  # (decoration, body line) of the piece's jumps and marks
        self.spans: frozenset[tuple[str, str]] = frozenset()  # (voice, "<" ">" or "ped") hairpins and pedals open
        self.slurs: dict[str, int] = {}  # open slurs per voice (replaced, never mutated: copies share it)
        self.decoration_names: list[str] | None = None  # the constraint's cache: names it allows in the open `!...!`
        self._reset_bar()

    def _reset_bar(self) -> None:
        self.pos = mpq(0)
        self.started = False  # an element (or a left bar line) was read in this voice's bar
        self.decorations: tuple[str, ...] = ()  # decorations and annotations (`ANNOTATION`) for the next element
        self.element: str | None = None
        self.accidentals = ""  # of the note being read
        self.pitch = ""  # letter and octave marks of the note being read (`C,,`, `c'`)
        self.chord_notes = 0  # notes read in the open chord
        self.length = Length()
        self.stage = 0  # note: 0 none, 1 accidentals read, 2 letter read (octave marks), 3 length
        self.chord_stage = 0  # 0 outside a chord, 1 inside before its first note's end, 2 later notes
        self.chord_inner = WHOLE
        self.element_scale = WHOLE  # tuplet factor of the open element
        self.last_length: mpq | None = None  # length of the last element, for broken rhythm
        self.broken_next = WHOLE  # factor waiting for the next element
        self.broken_open = False  # a broken sign was read, its second element not yet complete
        self.broken_sign = ""
        self.broken_count = 0
        self.broken_base = WHOLE  # the previous element's length before its pair changed it
        self.can_break = False  # the previous char ended an element: `>` may follow
        self.pair_closed = False  # the last element was the second of a broken pair
        self.last_scale = WHOLE  # tuplet factor of the last element
        self.closed_count = 0  # elements committed in this bar (the constraint sees which char closed one)
        self.last_written: mpq | None = None  # written length of the last committed element (None in a tuplet)
        self.tuplet_factor = WHOLE
        self.tuplet_left = 0  # elements the tuplet still scales

    # ------------------------------------------------------------------------------------- settings
    def voice_settings(self) -> VoiceSettings:
        """The current voice's unit and metre: the header's until an inline field changes them."""
        found = self.settings.get(self.voice) if self.voice is not None else None
        return found if found is not None else self.header_settings

    @property
    def unit(self) -> mpq:
        return self.voice_settings().unit

    @property
    def metre(self) -> mpq | None:
        return self.voice_settings().metre

    # ------------------------------------------------------------------------------------------ feed
    def feed(self, char: str) -> None:
        """Read one char (EOS = end of a patch, BOS = end of the piece); raises AbcRefused."""
        if not self.step(char):
            raise AbcRefused(f"{char!r} refused (mode {self.mode}, line {self.body_line})")

    def feed_text(self, text: str) -> None:
        for char in text:
            self.feed(char)

    def copy(self) -> BarReader:
        """An independent copy that does not record bars (the constraint simulates chars on it)."""
        clone = BarReader.__new__(BarReader)
        clone.__dict__.update(self.__dict__)  # every other field is immutable or replaced, never mutated
        clone.length = self.length.copy()
        clone.record = False
        return clone

    def committed(self) -> BarReader | None:
        """A copy with the open element committed, as a char that does not continue it commits it; None
        where it cannot end here (incomplete, or a chord's note). The constraint tests the chars that end
        an element on it, committing once instead of once per char."""
        clone = self.copy()
        if clone.element is not None and (clone.chord_stage or not clone._close_element()):
            return None
        return clone

    def step(self, char: str) -> bool:
        """`feed` without the exception: False (state undefined) where the char is refused.

        `patch_pos` follows the patchilizer: a patch holds 16 chars or ends with EOS; every line and every
        bar that a bar line followed by `[V:` starts begins a patch. Text without EOS (a prompt) is read
        too: the positions are then corrected where the split becomes known (the `[` after a bar line).
        """
        if char == EOS_CHAR:
            return self._end_patch()
        if char == BOS_CHAR:
            if self.mode != LINE_START or not self.in_body:
                return False
            self.mode, self.patch_pos = ENDED, 1
            return True
        if self.mode == ENDED:
            return False
        if char not in "\n\t" and not " " <= char <= "~":
            return False
        after_eos, self.after_eos = self.after_eos, False
        if after_eos and self.mode == MUSIC and char not in BARLINE_CHARS:
            return False  # a patch ended early before a bar line: the next patch starts with it
        if self.mode == LINE_START:
            self.patch_pos = 0
        if not _HANDLERS[self.mode](self, char):
            return False
        self.last = char
        if after_eos:
            self.barline_after_eos = True
        self.patch_pos = (self.patch_pos + 1) % PATCH_SIZE
        return True

    def _end_patch(self) -> bool:
        if self.mode == ENDED or (self.mode == LINE_START and self.patch_pos):
            self.patch_pos = 0
            return True
        if self.mode == MUSIC and self.segment_open and self.started and self._can_close_bar() and self.patch_pos:
            self.after_eos = True
            self.patch_pos = 0
            return True
        return False

    # --------------------------------------------------------------------------------- line level
    def _line_start(self, char: str) -> bool:
        if char == "[":
            self.in_body = True
            self.body_line += 1
            self.prev_remaining, self.remaining = self.remaining, None
            self.voice = None
            self.segment_open = False
            self.line_voices = ()
            self.mode = BRACKET
            return True
        if self.in_body or char == "\n":
            return char == "\n" and not self.in_body
        self.mode = HEADER
        self.buffer = char
        return True

    def _header(self, char: str) -> bool:
        if char != "\n":
            self.buffer += char
            return True
        try:
            self._header_line(self.buffer)
        except AbcRefused:
            return False
        self.buffer = ""
        self.mode = LINE_START
        return True

    def _header_line(self, line: str) -> None:
        if line.startswith("%%score"):
            self.score_voices = tuple(re.findall(r"[^\s\[\]{}()|]+", line[len("%%score"):]))
            return
        name, _, value = line.partition(":")
        if len(name) != 1 or not _:
            return
        if name == "M":
            self.header_metre = parse_metre(value.split("%")[0])
        elif name == "L":
            self.header_unit = parse_unit(value.split("%")[0])
        if name in "ML":
            metre = self.header_metre
            self.header_settings = VoiceSettings(self.header_unit if self.header_unit is not None else default_unit(metre), metre)
        if name == "V":
            voice = value.split()[0] if value.split() else ""
            if voice and voice not in self.declared:
                self.declared += (voice,)

    # ---------------------------------------------------------------------------- brackets, fields
    def _bracket(self, char: str) -> bool:
        """After `[`: a field, a chord, `[|` or an ending `[1`."""
        if char in NOTE_LETTERS or char in ACCIDENTALS:
            if not self.segment_open:
                return False
            self._start_element("chord")
            self.chord_stage = 1
            self.chord_notes = 0
            self.mode = MUSIC
            return self._music(char)
        if char.isalpha():
            self.field = char
            self.mode = FIELD_NAME
            return True
        if char == "|" and self.segment_open:
            self.mode = MUSIC
            return self._barline_start("[|")
        if char in DIGITS and self.segment_open:
            self.mode, self.ending_closes = ENDING, False
            return True
        return False

    def _field_name(self, char: str) -> bool:
        if char != ":":
            return False
        if (self.field in "Vr") == self.segment_open:
            return False  # `[V:` only between voice bars, other fields only inside one
        if self.field == "r" and self.voice is not None:
            return False
        self.mode = FIELD
        self.buffer = ""
        return True

    def _field(self, char: str) -> bool:
        if char == "\n" or char == "[":
            return False
        if char != "]":
            self.buffer += char
            return True
        return self._close_field(self.field, self.buffer)

    def _close_field(self, name: str, text: str) -> bool:
        self.mode = MUSIC
        try:
            if name == "V":
                voice = text.split()[0] if text.split() else ""
                if not voice or voice in (v for v, _ in self.line_voices):
                    return False
                self.voice = voice
                self.segment_open = True
                self._reset_bar()
            elif name == "r":
                first, _, rest = text.partition("/")
                self.remaining = int(rest) if first.isdigit() and rest.isdigit() else None
                if self.remaining is None:
                    return False
            elif name in ("M", "L"):
                if self.voice is None:
                    return False
                current = self.voice_settings()
                if name == "M":
                    current = VoiceSettings(current.unit, parse_metre(text))
                else:
                    current = VoiceSettings(parse_unit(text), current.metre)
                self.settings = {**self.settings, self.voice: current}
        except AbcRefused:
            return False
        return self.voice is not None or name == "r"

    # ---------------------------------------------------------------------------------- the music
    def _start_element(self, kind: str) -> None:
        self.element = kind
        self.accidentals = ""
        self.length = Length()
        self.stage = 0
        self.element_scale = WHOLE
        if self.tuplet_left > 0:
            self.element_scale = self.tuplet_factor
            self.tuplet_left -= 1
        self.started = True
        self.can_break = False
        self.decorations = ()

    def _element_value(self) -> mpq:
        """Length (whole notes) of the open element with its current suffix, before broken rhythm."""
        if self.element == "measure_rest":
            metre = self.metre
            return (int(self.length.num) if self.length.num else 1) * (metre or 0)
        value = _times(self.unit, self.length.value)  # (factors of 1 skipped: the commonest case)
        if self.element == "chord":
            value = _times(value, self.chord_inner)
        return _times(value, self.element_scale)

    def _element_complete(self) -> bool:
        if self.element == "chord":
            return self.chord_stage == 0 and self.stage == 3
        if self.element == "note":
            return self.stage >= 2
        return True

    def _close_element(self) -> bool:
        """Commit the open element (at the first char that does not continue it)."""
        if not self._element_complete():
            return False
        if self.element == "measure_rest" and self.metre is None:
            return False
        written = self._element_value()
        length = _times(written, self.broken_next)
        self.pos += length
        plain = self.element_scale is WHOLE or self.element_scale == 1
        self.last_written = written if plain else None
        if plain and written < self.shortest:
            self.shortest = written
        self.pair_closed = self.broken_open
        if self.broken_open:
            self.broken_open = False
            self.broken_next = WHOLE
        else:
            self.last_length = length
            self.last_scale = self.element_scale
        self.closed_count += 1
        self.element = None
        self.can_break = True
        return True

    def _music(self, char: str) -> bool:
        if self.voice is None:  # after `[r:i/j]`: the first `[V:`
            self.mode = BRACKET if char == "[" else self.mode
            return char == "["
        if self.element is not None and self._continue_element(char):
            return True
        if self.element is not None and self.chord_stage == 0:
            if not self._close_element():
                return False
        elif self.element is not None:
            return self._chord_char(char)
        return self._music_start(char)

    def _continue_element(self, char: str) -> bool:
        """Whether `char` continues the open element (and takes it)."""
        if self.element == "note" or (self.element == "chord" and self.chord_stage):
            return self._note_char(char)
        if self.element == "measure_rest":
            return self.length.slashes == 0 and char in DIGITS and self.length.accepts(char)
        return self.length.accepts(char)  # rest, or a chord's outer length

    def _note_char(self, char: str) -> bool:
        if self.stage <= 1 and char in ACCIDENTALS:
            self.stage = 1
            self.accidentals = self.accidentals + char if self.stage else char
            return True
        if self.stage <= 1 and char in NOTE_LETTERS:
            self.stage = 2
            self.pitch = char
            self.chord_notes += self.chord_stage > 0
            return True
        if self.stage == 2 and char in OCTAVE_MARKS:
            self.pitch += char
            return True
        if self.stage >= 2 and self.length.accepts(char):
            self.stage = 3
            return True
        return False

    def _chord_char(self, char: str) -> bool:
        """A char inside `[...]` that is not part of the note being read."""
        if self.stage == 1:
            return False  # accidentals without a letter
        if self.stage >= 2 and self.chord_stage == 1:
            self.chord_inner = self.length.value
            self.chord_stage = 2
        if char == "]":
            if self.stage == 0 and self.chord_stage == 1:
                return False  # empty chord
            self.chord_stage = 0
            self.stage = 3
            self.length = Length()
            return True
        self.stage = 0
        self.length = Length()
        if char in ACCIDENTALS or char in NOTE_LETTERS:
            return self._note_char(char)
        if char in "!+":  # a decoration on a chord note: back in the chord after it
            self.mode, self.closer, self.buffer, self.decoration_names = DECORATION, char, "", None
            return True
        return char in " -" or char in DECORATION_SHORTHANDS  # ties and decorations on chord notes

    def _music_start(self, char: str) -> bool:
        """A char between elements."""
        can_break, self.can_break = self.can_break, False
        if char in NOTE_LETTERS or char in ACCIDENTALS:
            self._start_element("note")
            return self._note_char(char)
        if char in REST_LETTERS:
            self._start_element("rest")
            return True
        if char in MEASURE_RESTS:
            if self.started or self.tuplet_left:
                return False
            self._start_element("measure_rest")
            return True
        if char in "<>":
            return self._broken(char, can_break)
        if char == "-":  # a tie belongs to its note: `g-<c` is a broken pair
            self.can_break = can_break
            return True
        if char in DECORATION_SHORTHANDS:
            self._add_decoration(SHORTHAND_NAMES[char])
            return True
        if char == ")":
            self.slurs = {**self.slurs, self.voice: max(self.slur_depth() - 1, 0)}
            return True
        if char in IGNORED:
            return True
        if char == "(":
            self.mode = PAREN
            return True
        if char == '"':
            self.mode, self.buffer = QUOTE, ""
            return True
        if char in "!+":
            self.mode, self.closer, self.buffer, self.decoration_names = DECORATION, char, "", None
            return True
        if char == "{":
            self.mode, self.buffer = GRACE, ""
            return True
        if char == "[":
            self.mode = BRACKET
            return True
        if char in BARLINE_CHARS:
            return self._barline_start(char)
        return False

    def _broken(self, char: str, can_break: bool) -> bool:
        if can_break and not self.broken_open and self.last_length is not None:
            self.broken_sign, self.broken_count, self.broken_base = char, 1, self.last_length
        elif self.broken_open and self.broken_sign == char:
            self.broken_count += 1  # `>>`: replace the single sign's change by the double's
        else:
            return False
        before = broken_factors(char, self.broken_count - 1)[0] if self.broken_count > 1 else WHOLE
        first, second = broken_factors(char, self.broken_count)
        self.pos += self.broken_base * (first - before)
        self.last_length = self.broken_base * first  # abc2xml pairs `a>b>c` as (a, b) then (changed a, c)
        self.broken_next = second
        self.broken_open = True
        self.can_break = False
        return True

    # -------------------------------------------------------------------- skipped constructs
    def _quote(self, char: str) -> bool:
        """Inside `"..."`: `buffer` holds the text so far."""
        if char == "\n":
            return False
        if char == '"':
            self.mode = MUSIC
            self._add_decoration(ANNOTATION)
        else:
            self.buffer += char
        return True

    def _decoration(self, char: str) -> bool:
        if char == "\n" or (char == "|" and self.closer == "!"):
            return False
        if char == self.closer:
            self.mode = MUSIC
            self._add_decoration(self.buffer)
            return bool(self.buffer)
        self.buffer += char
        return True

    def _add_decoration(self, name: str) -> None:
        self.decorations += (name,)
        if name in PIECE_MARKS:
            self.marks = self.marks | {(name, self.body_line)}
        if name in SPAN_STARTS:
            self.spans = self.spans | {(self.voice, SPAN_STARTS[name])}
        elif name in SPAN_ENDS:
            self.spans = self.spans - {(self.voice, SPAN_ENDS[name])}

    def slur_depth(self) -> int:
        """Slurs open in the current voice."""
        return self.slurs.get(self.voice, 0)

    def _grace(self, char: str) -> bool:
        """Inside `{...}`: nothing lasts; anything but a bar line, a brace or a newline is skipped."""
        if char == "}":
            self.mode = MUSIC
            return any(c in NOTE_LETTERS for c in self.buffer)
        if char in "|{\n":
            return False
        self.buffer += char
        return True

    def _paren(self, char: str) -> bool:
        self.mode = MUSIC
        if char in DIGITS and char != "0":
            self.mode, self.buffer = TUPLET, char
            return True
        self.slurs = {**self.slurs, self.voice: self.slur_depth() + 1}
        return self._music(char)  # a slur

    def _tuplet(self, char: str) -> bool:
        if char in DIGITS or (char == ":" and self.buffer.count(":") < 2):
            self.buffer += char
            return True
        parts = (self.buffer.split(":") + ["", ""])[:3]
        p = int(parts[0])
        q = int(parts[1]) if parts[1] else (3 if p in (2, 4, 8) else 2)
        r = int(parts[2]) if parts[2] else p
        if q == 0 or r == 0:
            return False
        self.tuplet_factor, self.tuplet_left = mpq(q, p), r
        self.mode = MUSIC
        return self._music(char)

    # ---------------------------------------------------------------------------------- bar lines
    def _can_close_bar(self) -> bool:
        """Reader-level check only: the open element can end here and nothing waits for a partner. An open
        element that can end is the partner a broken sign waits for (`A>B|`: the bar line commits `B`)."""
        if self.element is not None:
            return not self.chord_stage and self._element_complete()
        return not self.broken_open

    def _barline_start(self, text: str) -> bool:
        if self.element is not None and not self._close_element():
            return False
        if self.broken_open:
            return False
        self.mode, self.buffer = BARLINE, text
        if not self.started:  # a left bar line: `[V:1]|:abc|`
            return True
        if ANNOTATION in self.decorations:  # a text direction at the bar's end ("M.D.C."): a piece mark
            self.marks = self.marks | {(ANNOTATION, self.body_line)}
        self.line_voices += ((self.voice, self.pos),)
        if self.record:
            self.bars.append(VoiceBar(self.body_line, self.voice, self.pos, self.metre))
        self.segment_open = False
        self.barline_pos, self.barline_after_eos = self.patch_pos, False
        return True

    def _barline(self, char: str) -> bool:
        if char in BARLINE_CHARS or (char == "]" and self.buffer.endswith("|")):
            self.buffer += char
            return True
        if self.segment_open:  # after a left bar line the bar's music follows
            self.mode = MUSIC
            return self._music(char)
        if char in DIGITS:
            self.mode, self.ending_closes = ENDING, True
            return True
        self.mode = SEGMENT_END
        return self._segment_end(char)

    def _ending(self, char: str) -> bool:
        if char in DIGITS or char in ",-":
            return True
        if self.ending_closes:
            self.mode = SEGMENT_END
            return self._segment_end(char)
        self.mode = MUSIC  # `[1` at a bar's start
        return self._music(char)

    def _segment_end(self, char: str) -> bool:
        if char == "\n":
            self.mode = LINE_START
            self.voice = None
            return True
        if char == "[":  # the bar line started a patchilizer bar: its patch began there
            self.patch_pos = (self.patch_pos - self.barline_pos) % PATCH_SIZE
            self.barline_pos = 0
            self.mode = BRACKET
            return True
        return char == " "


_HANDLERS = {
    HEADER: BarReader._header,
    LINE_START: BarReader._line_start,
    MUSIC: BarReader._music,
    BRACKET: BarReader._bracket,
    FIELD_NAME: BarReader._field_name,
    FIELD: BarReader._field,
    QUOTE: BarReader._quote,
    DECORATION: BarReader._decoration,
    GRACE: BarReader._grace,
    PAREN: BarReader._paren,
    TUPLET: BarReader._tuplet,
    BARLINE: BarReader._barline,
    ENDING: BarReader._ending,
    SEGMENT_END: BarReader._segment_end,
}
