"""What the model may say beyond durations: annotation text, decorations per note, header voice lines.

`BarConstraint` keeps NotaGen's bars exact; these rules keep the rest of what it writes readable, as the
training data (xml2abc's output of real scores) writes it. Each is a pure test of the text typed so far,
exact on prefixes (a text it allows can always be finished), so the decoder never reaches a dead end:

* annotations `"..."`: one a note, before it; at a bar's end only as a text direction ("D.C.") where a
  jump could stand (see below); a chord symbol (`"G7"`, `"Bbm/F"`) or a placement `^ _ < > @` and at most 30 chars
  of words: the words real scores' annotations hold (`annotation_words.txt`, in lower case, Capitalised or
  CAPITALS, in parentheses, with a final `,`), numbers of two digits (fingerings) or ordinals (`1st`,
  `8va`), at most one single letter (`a tempo`); never ABC music such as `c2 B2- A2` or invented words;
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
_NUMBER_PREFIX = re.compile(r"\d{1,2}(?:(?:st|nd|rd|th|er|e|o|va|vb|ma|mb)?\.?|[snrtvm])")
"""Every prefix of a `_NUMBER`, and nothing else."""
_NUMBER_ENDS = ("", ".", "t", "d", "h", "r", "a", "b")
"""What may finish a `_NUMBER_PREFIX` (`1s` -> `1st`; `1e` -> `1er`, when a single letter is no longer allowed)."""
_WORD = re.compile(r"[A-Za-z]+(?:[.'-][A-Za-z]+)*[.,]?")  # in parentheses or not
_WORD_PREFIX = re.compile(r"(?:[A-Za-z]+(?:[.'-][A-Za-z]+)*[-.',]?)?")
"""Every prefix of a `_WORD`, and nothing else (so a word can always be finished)."""


def annotation_allows(text: str, char: str) -> bool:
    """Whether `char` may follow annotation text `text` (inside the quotes; `"` closes it)."""
    if char == "\n":
        return False
    complete = char == '"'
    typed = text if complete else text + char
    if not typed:
        return False
    if typed[0] in "^_":  # above or below (the other placements are next to unused in real scores)
        return _words_allowed(typed[1:], complete)
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


def _words_allowed(text: str, complete: bool) -> bool:
    if text.startswith(" ") or "  " in text or (complete and (not text or text.endswith(" "))):
        return False
    words = text.split(" ")
    last_complete = complete or text.endswith(" ") or _final(words[-1])
    whole_words = words if last_complete else words[:-1]
    singles = sum(_single_letter(word) for word in whole_words)
    closing = not last_complete and words[-1].startswith("(") and words[-1].endswith(",")
    if closing and not _word_allowed(words[-1] + ")", True):
        return False  # `(B,` can only close, so it must be a word once closed
    if singles + (closing and _single_letter(words[-1])) > 1:
        return False  # one `a` (a tempo), not `A, F, D`
    to_finish = _to_finish(text, sum(_single_letter(word) for word in words[:-1]))
    if len(text) + to_finish > ANNOTATION_CHARS:
        return False
    for index, word in enumerate(words):
        if not word:
            continue
        if not _word_allowed(word, index < len(words) - 1 or last_complete):
            return False
    return True


def _single_letter(word: str) -> bool:
    return len(re.sub("[^A-Za-z]", "", word)) == 1 and "." not in word


def _final(word: str) -> bool:
    """Whether nothing can extend `word` (it ends with `)`, or with `,` outside parentheses): it is then
    judged whole at once, so a word that could not stand is refused before it leaves no way on."""
    return word.endswith(")") or (word.endswith(",") and not word.startswith("("))


def _word_allowed(word: str, whole: bool) -> bool:
    whole = whole or _final(word)
    if (_NUMBER if whole else _NUMBER_PREFIX).fullmatch(word):
        return True
    opened = word.startswith("(")
    core = word[1:] if opened else word
    if core.endswith(")"):  # a closing parenthesis ends the word
        opened, whole, core = not opened, True, core[:-1]
    if (whole and opened) or not (_WORD if whole else _WORD_PREFIX).fullmatch(core) or core.count("'") > 1:
        return False
    if not all(part.islower() or part.isupper() or part.istitle() for part in re.split("[-.',]", core) if part):
        return False  # lower, Capitalised or CAPITALS, not `cB`
    words, completions, _ = _annotation_vocabulary()
    key = core.lower()
    return (key.removesuffix(",") in words) if whole else (key in completions or key[:-1] in words and key[-1:] == ",")


def _to_finish(text: str, singles: int) -> int:
    """The fewest chars that make `text`'s last word whole (the length limit leaves room for them); after
    `singles` single-letter words, not another one."""
    last = text.rsplit(" ", 1)[-1]
    if _NUMBER_PREFIX.fullmatch(last):  # an ordinal may need a second letter not to be a second single letter
        return next((len(end) for end in _NUMBER_ENDS if _NUMBER.fullmatch(last + end)
                     and not (singles and _single_letter(last + end))), ANNOTATION_CHARS)
    if _final(last):
        return 0
    words, completions, longer = _annotation_vocabulary()
    key = last.lstrip("(").lower()
    rest = 0 if key.endswith(",") and key[:-1] in words else (longer if singles else completions).get(key)
    return ANNOTATION_CHARS if rest is None else rest + last.startswith("(")


ANNOTATION_WORDS_FILE = Path(__file__).with_name("annotation_words.txt")


def annotation_word(token: str) -> str | None:
    """An annotation token as the vocabulary holds it: lowercased, without its parentheses or a final comma;
    None for a number or anything that is not a word."""
    core = token.strip("()").removesuffix(",")
    return core.lower() if _WORD.fullmatch(core) and not _NUMBER.fullmatch(core) else None


@lru_cache(maxsize=1)
def _annotation_vocabulary() -> tuple[frozenset[str], dict[str, int], dict[str, int]]:
    """(the words annotations may hold, the fewest chars that finish each prefix of one into a word, the same
    into a word of two letters or more): the words of real scores' annotations (`ANNOTATION_WORDS_FILE`,
    built by `python -m training.annotation_words`), so the model writes "cresc." and "dolce", not
    "fgerrleno"."""
    lines = ANNOTATION_WORDS_FILE.read_text(encoding="utf-8").splitlines()
    words = frozenset(line for line in lines if line and not line.startswith("#"))
    completions: dict[str, int] = {}
    longer: dict[str, int] = {}
    for word in words:
        for cut in range(len(word) + 1):
            prefix, rest = word[:cut], len(word) - cut
            completions[prefix] = min(rest, completions.get(prefix, rest))
            if len(re.sub("[^a-z]", "", word)) > 1:
                longer[prefix] = min(rest, longer.get(prefix, rest))
    return words, completions, longer


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
