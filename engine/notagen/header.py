"""Header control: the ensemble, key, metre and tempo of a new piece, written by the app as NotaGen's header.

NotaGen writes a piece as prompt lines, a header (`%%score`, `L:`, `Q:`, `M:`, `K:`, one `V:` line per staff)
and the body. When the user fixes any of these, the app writes the header in exactly the format of the
training data (xml2abc's `mkHeader`: `%%score` only for more than one staff, a brace `{ 1 | 2 }` per
multi-staff part, `V:n clef nm="..." snm="..."` with the names on a part's first staff) and the model
writes only the body, so the piece has exactly those parts. The ensembles offered for a prompt are the
common real headers of its fine-tuning pieces (`assets/notagen/ensembles.json`, made by
`python -m training.ensembles`) and, for every instrumentation, a few standard ones (`STANDARD_ENSEMBLES`).
Torch-free: the command line and the web UI read it without loading a model.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from engine.errors import ScoreError
from engine.notagen.prompts import Prompt, PromptLike
from engine.scoring.instrumentation import matches_instrumentation

ENSEMBLE_TABLE = Path(__file__).resolve().parents[2] / "assets" / "notagen" / "ensembles.json"

CLEFS = ("treble", "bass", "alto", "tenor", "treble-8")
"""The clefs a chosen part may have (xml2abc's names)."""
MAJOR_KEYS = ("Cb", "C", "C#", "Db", "D", "Eb", "E", "F", "F#", "Gb", "G", "Ab", "A", "Bb", "B")
MINOR_KEYS = ("Ab", "A", "A#", "Bb", "B", "C", "C#", "D", "D#", "Eb", "E", "F", "F#", "G", "G#")
"""The tonics of the keys with at most 7 accidentals (as NotaGen's data transposes to)."""
METRE_DENOMINATORS = (1, 2, 4, 8, 16, 32)
MAX_VOICES = 24

_KEY = re.compile(r"^([A-Ga-g])([#b]?)\s*(m|min|minor|maj|major)?$", re.IGNORECASE)
_METRE = re.compile(r"^(\d+)/(\d+)$")
_VOICE_LINE = re.compile(r'^V:(\d+)\s+(\S+)?\s*(?:nm="([^"]*)")?\s*(?:snm="([^"]*)")?\s*$')


@dataclass(frozen=True)
class Part:
    """One instrument or singer: its staves' clefs (a piano has two) and its names in the score."""

    name: str
    clefs: tuple[str, ...] = ("treble",)
    short: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "clefs", tuple(self.clefs))
        if not self.clefs:
            raise ScoreError(f"the part {self.name!r} has no staff")
        unknown = [clef for clef in self.clefs if clef not in CLEFS]
        if unknown:
            raise ScoreError(f"the part {self.name!r} has an unknown clef {unknown[0]!r} (known: {', '.join(CLEFS)})")
        for text in (self.name, self.short):
            if '"' in text or "\\" in text or any(not 32 <= ord(char) < 127 for char in text):
                raise ScoreError(f"a part name must be printable ASCII without quotes or backslashes, not {text!r}")


@dataclass(frozen=True)
class Ensemble:
    """The parts of a piece, in score order; `name` is what the user picks ("string quartet")."""

    name: str
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        if not self.parts:
            raise ScoreError(f"the ensemble {self.name!r} has no parts: it needs at least one")
        if self.staves > MAX_VOICES:
            raise ScoreError(f"the ensemble {self.name!r} has {self.staves} staves; at most {MAX_VOICES} can be written")

    @property
    def staves(self) -> int:
        return sum(len(part.clefs) for part in self.parts)

    @property
    def signature(self) -> tuple:
        """What the header says (not the ensemble's own name): equal signatures write equal headers."""
        return tuple((part.name, part.clefs, part.short) for part in self.parts)

    def header_lines(self) -> tuple[list[str], list[str]]:
        """The `%%score` line (none for one staff) and the `V:` lines."""
        tokens, voices, number = [], [], 1
        for part in self.parts:
            staves = [str(number + i) for i in range(len(part.clefs))]
            tokens += ["{", " | ".join(staves), "}"] if len(staves) > 1 else staves
            names = (f'nm="{part.name}"' if part.name else "") + (f' snm="{part.short}"' if part.short else "")
            for i, clef in enumerate(part.clefs):
                voices.append(f"V:{number + i} {clef} {names if i == 0 else ''}\n")
            number += len(staves)
        score = [f"%%score {' '.join(tokens)}\n"] if len(tokens) > 1 else []
        return score, voices

    def to_dict(self) -> dict:
        return {"name": self.name, "parts": [{"name": p.name, "clefs": list(p.clefs), "short": p.short} for p in self.parts]}

    @classmethod
    def from_dict(cls, data: dict) -> Ensemble:
        return cls(data["name"], tuple(Part(p["name"], tuple(p["clefs"]), p.get("short", "")) for p in data["parts"]))

    @classmethod
    def parse(cls, spec: str) -> Ensemble:
        """From the command line's form: `Name:clef[+clef],...`, e.g. `Violin:treble,Piano:treble+bass`."""
        parts = []
        for item in (item.strip() for item in spec.split(",")):
            if not item:
                continue
            name, _, clefs = item.partition(":")
            parts.append(Part(name.strip(), tuple(c.strip() for c in clefs.split("+")) if clefs else ("treble",)))
        return cls(spec, tuple(parts))


def _part(name: str, short: str, *clefs: str) -> Part:
    return Part(name, clefs or ("treble",), short)


_PIANO = _part("Piano", "Pno.", "treble", "bass")
_VIOLIN, _VIOLA, _CELLO = _part("Violin", "Vln."), _part("Viola", "Vla.", "alto"), _part("Violoncello", "Vc.", "bass")
_STRINGS = (_part("Violin I", "Vln. I"), _part("Violin II", "Vln. II"), _VIOLA, _CELLO)
_SATB = (_part("Soprano", "S."), _part("Alto", "A."), _part("Tenor", "T.", "bass"), _part("Bass", "B.", "bass"))

STANDARD_ENSEMBLES: dict[str, tuple[Ensemble, ...]] = {
    "Keyboard": (Ensemble("piano", (_PIANO,)),),
    "Chamber": (
        Ensemble("string quartet", (_part("Violin 1", "Vln. 1"), _part("Violin 2", "Vln. 2"), _VIOLA, _CELLO)),
        Ensemble("piano trio", (_VIOLIN, _CELLO, _PIANO)),
        Ensemble("violin and piano", (_VIOLIN, _PIANO)),
        Ensemble("cello and piano", (_CELLO, _PIANO)),
        Ensemble("flute and piano", (_part("Flute", "Fl."), _PIANO)),
        Ensemble("string trio", (_VIOLIN, _VIOLA, _CELLO)),
    ),
    "Art Song": (Ensemble("voice and piano", (_part("Voice", "V."), _PIANO)),),
    "Choral": (Ensemble("SATB", _SATB), Ensemble("SATB and piano", (*_SATB, _PIANO))),
    "Orchestral": (
        Ensemble("small orchestra", (_part("Flute", "Fl."), _part("Oboe", "Ob."), _part("Bassoon", "Bsn.", "bass"),
                                     *_STRINGS, _part("Contrabass", "Cb.", "bass"))),
        Ensemble("string orchestra", (*_STRINGS, _part("Contrabass", "Cb.", "bass"))),
    ),
    "Vocal-Orchestral": (
        Ensemble("soprano and strings", (_part("Soprano", "S."), *_STRINGS)),
        Ensemble("SATB and strings", (*_SATB, *_STRINGS)),
    ),
}
"""Hand-written standard ensembles per instrumentation (the official prompts' six), offered for every prompt
after the ones its fine-tuning pieces used."""


def ensembles_for(prompt: Prompt | None, table: Path = ENSEMBLE_TABLE) -> list[Ensemble]:
    """The ensembles to offer for a prompt: its fine-tuning pieces' common ones (from `table`), then its
    instrumentation's, then the standard ones; each header once."""
    if prompt is None:
        return []
    computed = json.loads(table.read_text(encoding="utf-8")) if table.is_file() else {}
    label = "_".join((prompt.period, prompt.composer, prompt.instrumentation))
    listed = [*computed.get("prompts", {}).get(label, []), *computed.get("instrumentations", {}).get(prompt.instrumentation, [])]
    ensembles, seen = [], set()
    for ensemble in [*map(Ensemble.from_dict, listed), *STANDARD_ENSEMBLES.get(prompt.instrumentation, ())]:
        if ensemble.signature not in seen and ensemble.name not in {e.name for e in ensembles}:
            seen.add(ensemble.signature)
            ensembles.append(ensemble)
    return ensembles


def ensemble_part_names(table: Path = ENSEMBLE_TABLE) -> list[str]:
    """Every part name and short name of the fine-tuning pieces' ensembles (the words the decoder lets the
    model name parts with, `engine.notagen.written_subset`)."""
    computed = json.loads(table.read_text(encoding="utf-8")) if table.is_file() else {}
    listed = [e for group in ("prompts", "instrumentations") for es in computed.get(group, {}).values() for e in es]
    return [text for ensemble in listed for part in ensemble["parts"] for text in (part["name"], part.get("short", "")) if text]


def default_ensemble(prompt: PromptLike) -> Ensemble:
    """The ensemble of a header whose ensemble neither the user nor the model's own header gave: the
    prompt's first whose parts are its instrumentation (some fine-tuning pieces name their parts `P1`, or
    not at all), else a piano."""
    offered = ensembles_for(prompt) if isinstance(prompt, Prompt) else []
    fitting = [ensemble for ensemble in offered
               if matches_instrumentation(prompt.instrumentation, [part.name for part in ensemble.parts]) is not False]
    return (fitting or offered or STANDARD_ENSEMBLES["Keyboard"])[0]


def find_ensemble(name_or_spec: str, prompt: Prompt | None) -> Ensemble:
    """An ensemble offered for the prompt or a standard one, by name; else `Ensemble.parse`'s form."""
    offered = ensembles_for(prompt) + [e for standard in STANDARD_ENSEMBLES.values() for e in standard]
    for ensemble in offered:
        if ensemble.name.lower() == name_or_spec.strip().lower():
            return ensemble
    if ":" not in name_or_spec and "," not in name_or_spec:
        names = ", ".join(dict.fromkeys(e.name for e in offered))
        raise ScoreError(f"unknown ensemble {name_or_spec!r}: give one of {names}, or parts as Name:clef,Name:clef+clef")
    return Ensemble.parse(name_or_spec)


def abc_key(key: str) -> str:
    """`D`, `D major`, `F#m`, `Bb minor` ... as an ABC `K:` value (`D`, `F#min`); `ScoreError` otherwise."""
    match = _KEY.match(key.strip())
    if not match:
        raise ScoreError(f"unknown key {key!r}: give a tonic and major or minor, e.g. D, F# minor, Bbm")
    tonic = match.group(1).upper() + match.group(2)
    minor = (match.group(3) or "").lower() in ("m", "min", "minor")
    if tonic not in (MINOR_KEYS if minor else MAJOR_KEYS):
        raise ScoreError(f"the key {tonic} {'minor' if minor else 'major'} cannot be written (more than 7 accidentals)")
    return tonic + ("min" if minor else "")


def abc_metre(metre: str) -> str:
    """`3/4`, `6/8`, `C`, `C|` as an ABC `M:` value; `ScoreError` for anything no bar can have (`0/4`, `3/5`)."""
    metre = metre.strip()
    if metre in ("C", "C|"):
        return metre
    match = _METRE.match(metre)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) not in METRE_DENOMINATORS:
        raise ScoreError(f"the metre {metre!r} cannot be written: give beats/unit with beats >= 1 and a unit of "
                         f"{', '.join(map(str, METRE_DENOMINATORS))} (e.g. 3/4, 6/8), or C")
    return f"{int(match.group(1))}/{int(match.group(2))}"


@dataclass(frozen=True)
class HeaderChoice:
    """What the user fixed; None leaves a field to the model (its own header, see `completed`).
    `tempo` is quarter notes per minute."""

    ensemble: Ensemble | None = None
    key: str | None = None
    metre: str | None = None
    tempo: int | None = None

    def __post_init__(self) -> None:
        if self.key is not None:
            object.__setattr__(self, "key", abc_key(self.key))
        if self.metre is not None:
            object.__setattr__(self, "metre", abc_metre(self.metre))
        if self.tempo is not None and not (isinstance(self.tempo, int) and 10 <= self.tempo <= 400):
            raise ScoreError(f"the tempo must be a whole number of quarter notes per minute from 10 to 400, not {self.tempo}")

    @property
    def chosen(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    @property
    def complete(self) -> bool:
        """Nothing left to the model but the tempo (a header may have no `Q:`)."""
        return None not in (self.ensemble, self.key, self.metre)

    def completed(self, model_header: HeaderChoice, fallback: Ensemble) -> HeaderChoice:
        """Fields left open taken from the model's own header; the `fallback` ensemble, C major and 4/4 where
        the model's header lacks them."""
        filled = {f.name: getattr(model_header, f.name) for f in fields(self) if getattr(self, f.name) is None}
        choice = replace(self, **filled)
        return replace(choice, ensemble=choice.ensemble or fallback, key=choice.key or "C", metre=choice.metre or "4/4")


def write_header(choice: HeaderChoice) -> str:
    """The header lines of a complete choice, as the training data writes them."""
    if not choice.complete:
        raise ScoreError("a header needs an ensemble, a key and a metre")
    score, voices = choice.ensemble.header_lines()
    tempo = [f"Q:1/4={choice.tempo}\n"] if choice.tempo is not None else []
    return "".join([*score, "L:1/8\n", *tempo, f"M:{choice.metre}\n", f"K:{choice.key}\n", *voices])


def header_voices(choice: HeaderChoice) -> frozenset[int]:
    """The voice numbers the body of a piece with this (complete) header may use."""
    return frozenset(range(1, choice.ensemble.staves + 1))


def read_header(text: str) -> HeaderChoice:
    """What a NotaGen header says (prompt lines and body may follow): each field it has and that can be
    written again, else None. Staves with several voices (`( 1 2 )`) give no ensemble."""
    lines = []
    for line in text.split("\n"):
        if line.startswith(("[V:", "[r:")):
            break
        lines.append(line)
    values = {line[:2]: line[2:].strip() for line in lines if line[:2] in ("K:", "M:", "Q:")}
    return HeaderChoice(ensemble=_read_ensemble(lines), key=_optional(abc_key, values.get("K:")),
                        metre=_optional(abc_metre, values.get("M:")), tempo=_quarter_tempo(values.get("Q:")))


def _optional(parse, value: str | None):
    try:
        return parse(value) if value else None
    except ScoreError:
        return None


def _quarter_tempo(value: str | None) -> int | None:
    match = re.match(r"^1/4=(\d+)$", value or "")
    return int(match.group(1)) if match and 10 <= int(match.group(1)) <= 400 else None


def _read_ensemble(lines: list[str]) -> Ensemble | None:
    voices = {}
    for line in lines:
        match = _VOICE_LINE.match(line)
        if match:
            voices[int(match.group(1))] = (match.group(2) or "treble", match.group(3) or "", match.group(4) or "")
    if not voices:
        return None
    score = next((line[len("%%score"):].split() for line in lines if line.startswith("%%score")), [str(min(voices))])
    if "(" in score or sorted(int(t) for t in score if t.isdigit()) != sorted(voices):
        return None
    # A part is a single staff, or the staves of an innermost brace up to the next named staff.
    groups: list[list[int]] = []
    in_brace = False
    for token in score:
        if token in ("{", "}"):
            in_brace = token == "{"
            if in_brace:
                groups.append([])
        elif token.isdigit():
            voice = int(token)
            if not in_brace or (groups[-1] and voices[voice][1]):
                groups.append([])
            groups[-1].append(voice)
    try:
        parts = tuple(Part(voices[g[0]][1], tuple(voices[v][0] for v in g), voices[g[0]][2]) for g in groups if g)
        ensemble = Ensemble("", parts)
    except ScoreError:
        return None
    standard = {e.signature: e.name for ensembles in STANDARD_ENSEMBLES.values() for e in ensembles}
    return replace(ensemble, name=standard.get(ensemble.signature) or describe_parts(ensemble.parts))


def describe_parts(parts: tuple[Part, ...]) -> str:
    """A name for an ensemble without one: its parts' names ("Voice, Piano")."""
    return ", ".join(part.name or ("keyboard" if len(part.clefs) > 1 else "part") for part in parts)
