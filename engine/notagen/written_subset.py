"""What the model may say beyond durations: annotation text, decorations per note, header voice lines.

`BarConstraint` keeps NotaGen's bars exact; these rules keep the rest of what it writes readable, as the
training data (xml2abc's output of real scores) writes it. Each is a pure test of the text typed so far,
exact on prefixes (a text it allows can always be finished), so the decoder never reaches a dead end:

* annotations `"..."`: one a note, before it; at a bar's end only as a text direction ("D.C.") where a
  jump could stand (see below); a chord symbol (`"G7"`, `"Bbm/F"`) or, above or below (`^` `_`), a text
  that real scores write as it stands (`annotation_texts.txt`, at most 30 chars of words, fingerings or
  ordinals: `annotation_text_shaped`); never ABC music such as `c2 B2- A2`, invented words or real words in
  no real order;
* decorations: at most `MAX_DECORATIONS` per note, each once (aliases count as one), one dynamic; a
  jump (`!fine!`, then `!D.C.!` or `!D.S.!`) only right before a double, final or repeat bar line and a
  segno or coda only at a voice bar's start, each in one bar line of the piece and never in the first (a
  `!D.S.!` after a segno, no jump after the jump back); a hairpin or pedal ends only after it began; only those ends and the jumps may
  stand before a bar line (the others belong to the next note);
* header `V:` lines: the next voice of the `%%score` line (voices numbered 1..N there), then a clef of
  `CLEFS` and `nm="..."`/`snm="..."` names made of the words of real part names (`NAME_WORDS`), so no
  `V:416` and no garbled names.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from functools import lru_cache
from pathlib import Path

from engine.notagen.bar_reader import ANNOTATION, SPAN_ENDS, SPAN_STARTS
from engine.notagen.header import CLEFS, MAX_VOICES, STANDARD_ENSEMBLES, ensemble_part_names

MAX_DECORATIONS = 3
"""Decorations on one note (real scores: 99.6 % of decorated notes have at most two, 0.04 % four)."""
ANNOTATION_CHARS = 30
JUMPS = frozenset(("D.C.", "D.S.", "fine"))
BAR_START_MARKS = frozenset(("segno", "coda"))
DYNAMICS = frozenset(("pppp", "ppp", "pp", "p", "mp", "mf", "f", "ff", "fff", "ffff", "sfz", "sf", "fp"))
BAR_END = JUMPS | frozenset(("crescendo)", "<)", "diminuendo)", ">)", "ped-up"))
"""Decorations that may stand right before a bar line (real scores end hairpins and pedals there)."""
DECORATIONS = BAR_END | BAR_START_MARKS | DYNAMICS | frozenset(("crescendo(", "<(", "diminuendo(", ">(", "ped",
    "fermata", "invertedfermata", "trill", "trill(", "trill)", "mordent", "lowermordent", "uppermordent",
    "pralltriller", "turn", "invertedturn", "turnx", "accent", ">", "emphasis", "staccato", "tenuto", "wedge",
    "marcato", "^", "upbow", "downbow", "open", "thumb", "snap", "plus", "+", "breath", "roll", "slide",
    "arpeggio", "0", "1", "2", "3", "4", "5", "courtesy", "editorial", "/", "//", "///",
    "shortphrase", "mediumphrase", "longphrase", "x",
))
"""The `!...!` decorations the model may write: the standard ABC ones that abc2xml converts."""
_ALIASES = {"accent": ">", "emphasis": ">", "plus": "+", "crescendo(": "<(", "crescendo)": "<)",
            "diminuendo(": ">(", "diminuendo)": ">)", "mordent": "lowermordent", "pralltriller": "uppermordent"}
BARLINES_AFTER_JUMP = ("||", "|]", ":|", "::", "|:")


# ------------------------------------------------------------------------------------------ decorations
def decoration_allowed(name: str, pending: tuple[str, ...], *, started: bool, line: int,
                       marks: frozenset[tuple[str, int]], open_span: bool | None) -> bool:
    """Whether decoration `name` may join `pending` (those already on the next note), by the rules that need
    no duration: count, repetition, one dynamic, hairpins and pedals opened before closed (`open_span`:
    whether the voice has one of `name`'s kind open, None for other decorations), where and how often jumps
    and marks stand (`marks`: the piece's, with their body lines). The caller adds the duration rules (a
    jump needs a full bar, the others a note to follow, except `BAR_END` ones)."""
    canonical = _ALIASES.get(name, name)
    if len(pending) >= MAX_DECORATIONS or canonical in {_ALIASES.get(p, p) for p in pending}:
        return False
    if name in DYNAMICS and any(p in DYNAMICS for p in pending):
        return False
    if open_span is not None and open_span != (name in SPAN_ENDS):
        return False
    if name in JUMPS or name in BAR_START_MARKS:  # once a piece (in as many voices of that bar line as like)
        if line == 0 or (name in BAR_START_MARKS and started) or any(n == name and ln != line for n, ln in marks):
            return False
        if name in JUMPS and any(n in ("D.C.", "D.S.") and ln != line for n, ln in marks):
            return False  # nothing to jump to after the jump back
        return name != "D.S." or any(n == "segno" and ln < line for n, ln in marks)
    return True


@lru_cache(maxsize=4096)
def permitted_decorations(pending: tuple[str, ...], started: bool, line: int, marks: frozenset[tuple[str, int]],
                          open_kinds: frozenset[str]) -> tuple[str, ...]:
    """`decoration_allowed`'s names, sorted (`open_kinds`: the hairpins and pedal open in the voice); memoised,
    as the decoder asks at every char of a decoration."""
    return tuple(name for name in sorted(DECORATIONS) if decoration_allowed(
        name, pending, started=started, line=line, marks=marks, open_span=span_open(name, open_kinds)))


def span_open(name: str, open_kinds: frozenset[str]) -> bool | None:
    """Whether the hairpin or pedal that `name` opens or closes is open (None: `name` is neither)."""
    kind = SPAN_STARTS.get(name) or SPAN_ENDS.get(name)
    return None if kind is None else kind in open_kinds


def ends_at_barline(pending: tuple[str, ...]) -> bool:
    """Whether a bar line may follow these decorations (none of them waits for a note; an annotation there is
    a text direction such as "D.C.", which the caller lets stand only as jumps do)."""
    return all(name in BAR_END or name == ANNOTATION for name in pending)


# ------------------------------------------------------------------------------------------ annotations
_CHORD = re.compile(r"([A-G])([#b]?)([a-z+]*)(\d*)(/?)([A-G]?)([#b]?)")
_QUALITIES = ("", "m", "min", "maj", "dim", "aug", "sus", "+", "o")
_CHORD_NUMBERS = ("", "6", "7", "9", "11", "13")
_SUS_NUMBERS = ("", "2", "4")
_QUALITY_PREFIXES = frozenset(q[:i] for q in _QUALITIES for i in range(len(q) + 1))
_NUMBER_PREFIXES = frozenset(n[:i] for n in _CHORD_NUMBERS for i in range(len(n) + 1))
_NUMBER = re.compile(r"\d{1,2}(?:st|nd|rd|th|er|e|o|va|vb|ma|mb)?\.?")  # fingerings 4, 1.; ordinals 1st, 1er, 8va
_WORD = re.compile(r"[A-Za-z]+(?:[.'-][A-Za-z]+)*[.,]?")  # in parentheses or not
ANNOTATION_TEXTS_FILE = Path(__file__).with_name("annotation_texts.txt")


def annotation_allows(text: str, char: str) -> bool:
    """Whether `char` may follow annotation text `text` (inside the quotes; `"` closes it)."""
    if char == "\n":
        return False
    complete = char == '"'
    typed = text if complete else text + char
    if not typed:
        return False
    if typed[0] in "^_":  # above or below (the other placements are next to unused in real scores)
        return _text_allowed(typed[1:], complete)
    return _chord_allowed(typed, complete)


def _chord_allowed(text: str, complete: bool) -> bool:
    match = _CHORD.fullmatch(text)
    if not match:
        return False
    _, _, quality, number, slash, bass, bass_accidental = match.groups()
    qualities, numbers = (_QUALITIES, _CHORD_NUMBERS) if complete else (_QUALITY_PREFIXES, _NUMBER_PREFIXES)
    if quality == "sus":  # sus2, sus4
        numbers = _SUS_NUMBERS
    if quality not in (_QUALITIES if number or slash else qualities) or number not in (_CHORD_NUMBERS if slash else numbers):
        return False
    if (bass and not slash) or (bass_accidental and not bass):
        return False
    return not complete or bool(bass) == bool(slash)


def _text_allowed(text: str, complete: bool) -> bool:
    """Whether `text` is a real score's annotation text (`complete`) or the start of one: every text the
    decoder allows can be finished, and the model writes "Andante con moto", not "Andante cor cire A"."""
    texts, known = _annotation_texts()
    if complete:
        return text in known
    index = bisect_left(texts, text)
    return index < len(texts) and texts[index].startswith(text)


def annotation_text_shaped(text: str) -> bool:
    """Whether a real score's annotation text is one the model may copy: at most `ANNOTATION_CHARS` chars of
    words (lower case, Capitalised or CAPITALS, alone in parentheses or with a final `,`), numbers of two
    digits (fingerings) or ordinals (`1st`, `8va`), single spaces, at most one single letter (`a tempo`);
    not ABC music such as `c2 B2- A2` nor a lyric split into syllables (`co- me`)."""
    if not text or len(text) > ANNOTATION_CHARS or text != text.strip(" ") or "  " in text:
        return False
    words = text.split(" ")
    return sum(_single_letter(word) for word in words) <= 1 and all(map(_word_shaped, words))


def _single_letter(word: str) -> bool:
    return len(re.sub("[^A-Za-z]", "", word)) == 1 and "." not in word


def _word_shaped(word: str) -> bool:
    if _NUMBER.fullmatch(word):
        return True
    core = word[1:-1] if word.startswith("(") and word.endswith(")") else word
    if not _WORD.fullmatch(core) or core.count("'") > 1:
        return False
    return all(part.islower() or part.isupper() or part.istitle() for part in re.split("[-.',]", core) if part)


@lru_cache(maxsize=1)
def _annotation_texts() -> tuple[list[str], frozenset[str]]:
    """The annotation texts of real scores (`ANNOTATION_TEXTS_FILE`, built by `python -m
    training.annotation_texts`), sorted for the prefix search, and as a set."""
    lines = ANNOTATION_TEXTS_FILE.read_text(encoding="utf-8").splitlines()
    texts = sorted(line for line in lines if line and not line.startswith("#"))
    return texts, frozenset(texts)


# ----------------------------------------------------------------------------------------- voice lines
@lru_cache(maxsize=1 << 14)
def voice_line_allows(value: str, complete: bool, expected: str | None) -> bool:
    """A header `V:` value typed so far: the `expected` voice id (None: no more voices), then an optional
    clef, `nm="..."` and `snm="..."` in that order, single spaces between, a trailing space allowed. Memoised:
    the decoder tests many chars after each prefix, and pieces of one ensemble type the same names."""
    if expected is None:
        return False
    voice, space, tail = value.partition(" ")
    if not (space or complete):
        return expected.startswith(voice)
    return voice == expected and (not space or _voice_tail(" " + tail, complete))


def _voice_tail(text: str, complete: bool) -> bool:
    pos, stage = 0, 0  # stage: what may still come (0 clef, 1 nm, 2 snm, 3 nothing)
    while pos < len(text):
        if text[pos] != " ":
            return False
        pos += 1
        rest = text[pos:]
        if not rest:
            return True  # a trailing space: xml2abc writes `V:1 treble `
        for key, name_stage in (("nm=\"", 1), ("snm=\"", 2)):
            if stage <= name_stage and rest.startswith(key):
                name, quote, _ = rest[len(key):].partition('"')
                if not quote:
                    return not complete and part_name_allowed(name, False)
                if not part_name_allowed(name, True):
                    return False
                pos, stage = pos + len(key) + len(name) + 1, name_stage + 1
                break
        else:
            token = rest.split(" ", 1)[0]
            if stage == 0 and token in CLEFS and (complete or len(rest) > len(token)):
                pos, stage = pos + len(token), 1
                continue
            if complete or " " in rest:
                return False
            options = (CLEFS if stage == 0 else ()) + (("nm=\"",) if stage <= 1 else ()) + (("snm=\"",) if stage <= 2 else ())
            return any(option.startswith(rest) for option in options)
    return True


def part_name_allowed(name: str, complete: bool) -> bool:
    """A part name typed so far: up to three lines (xml2abc writes a line break as `\\n`) of four words in
    all, of `NAME_WORDS`, single spaces between; a later line may start with a few blanks and a colon, as
    xml2abc copies them from some MusicXML files. (Bounded, so a header line always ends in time.)"""
    words = len(name.replace("\\n", " ").split()) + (bool(name) and not (name[-1].isalnum() or name[-1] == "."))
    if (complete and not name) or name.count("\\n") + name.endswith("\\") > 2 or words > 4:
        return False  # (a blank or a line break already counts the word that must follow it)
    *lines, last = name.split("\\n")
    if not complete and last.endswith("\\"):  # a line break being typed
        lines, last = [*lines, last[:-1]], ""
    return (all(_name_line(line, True, index > 0) for index, line in enumerate(lines))
            and _name_line(last, complete, bool(lines)))


def _name_line(line: str, whole: bool, later: bool) -> bool:
    if later:
        line = line[len(_INDENT.match(line).group(0)):]
    if line.startswith(" ") or "  " in line or (whole and line.endswith(" ")):
        return False
    if not line:
        return True
    *words, last = line.split(" ")
    vocabulary, prefixes = _name_words()
    return all(word in vocabulary for word in words) and (last in vocabulary if whole else last in prefixes)


_INDENT = re.compile(r"[\t ]{0,4}:?")


NAME_WORDS = (
    "Soprano Sopran Mezzo Alto Contralto Tenor Tenore Baritone Bass Basso Bassus Cantus Altus Quintus Sextus "
    "Canto Quinto Voice Voices Chant Singstimme Gesang Stimme Strophe verse Chorus Choir Solo Tutti Superius Contratenor Triplum Motetus Duplum "
    "Piano Pianoforte Klavier Organ Organo Harpsichord Cembalo Continuo Harp Guitar Lute "
    "Violin Violino Viola Violoncello Cello Contrabass Double Bass Flute Flauto Piccolo Oboe Clarinet "
    "Clarinetto Bassoon Fagotto Horn Corno Trumpet Tromba Trombone Tuba Timpani Recorder in "
    "I II III IV V VI 1 2 3 4 5 6 7 8 1st 2nd 3rd 4th "
    "S S. A A. T T. B B. C C. Q Q. Ct Bar Bar. Pno Pno. Pf. Org. Vln Vln. Vn Vla Vla. Vc Vc. Vlc. Cb Cb. Db. "
    "Fl. Ob. Cl. Bsn. Hn. Hn Tpt. Tbn. Timp. Hp. Gtr. BC. Cont. Sop. Alt. Ten. Bs."
).split()
"""Words of real part names (the fine-tuning headers' and common scoring names, full and short), beside
those of `assets/notagen/ensembles.json` and `STANDARD_ENSEMBLES`."""


@lru_cache(maxsize=1)
def _name_words() -> tuple[frozenset[str], frozenset[str]]:
    """(words, every prefix of a word) of the part names the model may write."""
    names = ensemble_part_names() + [p.name for es in STANDARD_ENSEMBLES.values() for e in es for p in e.parts]
    names += [p.short for es in STANDARD_ENSEMBLES.values() for e in es for p in e.parts]
    words = frozenset(NAME_WORDS) | {word for name in names for word in name.split()}
    return words, frozenset(word[:i] for word in words for i in range(len(word) + 1))


# -------------------------------------------------------------------------------------------- %%score
def score_line_allows(voices: list[str], typing: str, complete: bool) -> bool:
    """The voice numbers of a `%%score` line typed so far (`typing`: the number being typed, if any):
    distinct, 1..`MAX_VOICES`, no leading zero; complete, they are 1..N (xml2abc numbers them so; the `V:`
    lines then follow the line's order)."""
    numbers = [int(voice) for voice in voices]
    if any(voice.startswith("0") for voice in voices) or len(set(numbers)) < len(numbers) or max(numbers, default=1) > MAX_VOICES:
        return False
    if typing and not any(str(n).startswith(typing) and n not in numbers for n in range(1, MAX_VOICES + 1)):
        return False  # the number being typed must still be able to become a new one
    return not complete or sorted(numbers) == list(range(1, len(numbers) + 1))
