"""What the measure model is told about each row of a grid: its instrument token.

A checkpoint names its scheme in its config (`MeasureConfig.instrument_scheme`):

* "names" (the chorale-only model): the part's normalised name ('violin', 'soprano'), with the
  chorales' abbreviations read as voices and the unnamed rows of a four-row score as S, A, T, B;
* "classes" (models trained on the whole corpus): a fixed vocabulary of what users open, so that a
  part named in any language or way maps to a row the model has seen: choral voices, a solo voice,
  each staff of a keyboard, the string family and `other`.

The transposition augmentation's shift is added to either ('violin_shifted-7', `Part.token`).
"""
from __future__ import annotations

from engine.measure.cells import MeasureScore, Part

CHORALE_VOICES = ("soprano", "alto", "tenor", "bass")
_CHORALE_ALIASES = {"s": "soprano", "a": "alto", "t": "tenor", "b": "bass", "sopran": "soprano", "tenore": "tenor",
                    "basso": "bass", "canto": "soprano", "alt": "alto"}
CLASSES = ("soprano", "alto", "tenor", "bass", "voice", "keyboard_upper", "keyboard_lower",
           "violin", "viola", "cello", "double_bass", "other")
_KEYBOARD = "keyboard"
#: words of a normalised part name -> class (the first word found decides)
_WORDS = {
    **{w: "soprano" for w in ("soprano", "sopran", "s", "canto", "cantus", "superius", "discantus", "treble")},
    **{w: "alto" for w in ("alto", "alt", "a", "altus", "contralto", "countertenor")},
    **{w: "tenor" for w in ("tenor", "tenore", "t", "tenorus")},
    **{w: "bass" for w in ("bass", "basso", "b", "bassus")},
    **{w: "voice" for w in ("voice", "voices", "singstimme", "gesang", "stimme", "voce", "voix", "mezzo",
                            "baritone", "bariton", "vocal", "singer", "chant", "melody")},
    **{w: _KEYBOARD for w in ("piano", "pianoforte", "klavier", "clavier", "keyboard", "harpsichord", "cembalo",
                              "organ", "organo", "orgel", "fortepiano", "pf", "pno")},
    **{w: "violin" for w in ("violin", "violino", "violine", "violini", "vl", "vln", "vn", "vi")},
    **{w: "viola" for w in ("viola", "viole", "bratsche", "va", "vla")},
    **{w: "cello" for w in ("violoncello", "cello", "violoncelli", "vc", "vlc", "vcl")},
    **{w: "double_bass" for w in ("contrabass", "kontrabass", "contrabasso", "cb", "kb")},
    **{w: "other" for w in ("continuo", "flute", "oboe", "clarinet", "horn", "trumpet", "bassoon", "guitar")},
}


def row_instruments(grid: MeasureScore, scheme: str) -> list[str]:
    """The instrument token's base name of each row under `scheme` ("names" or "classes")."""
    if scheme == "names":
        return _names(grid.parts)
    if scheme == "classes":
        return _classes(grid.parts)
    raise ValueError(f"unknown instrument scheme {scheme!r}")


def part_tokens(grid: MeasureScore, scheme: str) -> list[str]:
    """The rows' instrument tokens, shift included."""
    return [Part(part.name, base, part.shift).token for part, base in zip(grid.parts, row_instruments(grid, scheme))]


def class_vocabulary(shifts: tuple[int, int]) -> tuple[str, ...]:
    """Every token of the "classes" scheme with the shifts `shifts[0]..shifts[1]`."""
    return ("<unk>", *(Part("", base, s).token for base in CLASSES for s in range(shifts[0], shifts[1] + 1)))


def _names(parts: tuple[Part, ...]) -> list[str]:
    bases = [_CHORALE_ALIASES.get(part.instrument, part.instrument) for part in parts]
    if len(parts) == 4:
        bases = [CHORALE_VOICES[i] if base == "unknown" else base for i, base in enumerate(bases)]
    return bases


def _word_class(instrument: str) -> str | None:
    if instrument in _WORDS:
        return _WORDS[instrument]
    return next((_WORDS[word] for word in instrument.split("_") if word in _WORDS), None)


def _classes(parts: tuple[Part, ...]) -> list[str]:
    found = [_word_class(part.instrument) for part in parts]
    if len(parts) == 4 and all(f in (None, *CHORALE_VOICES) for f in found):
        found = [f or CHORALE_VOICES[i] for i, f in enumerate(found)]
    sung = [i for i, f in enumerate(found) if f in (*CHORALE_VOICES, "voice")]
    if len(sung) == 1 and _KEYBOARD in found:  # a song: its one singer is a solo voice, whatever the range
        found[sung[0]] = "voice"
    classes = []
    for i, (part, f) in enumerate(zip(parts, found)):
        if f == _KEYBOARD:
            below_a_staff = i > 0 and found[i - 1] == _KEYBOARD and parts[i - 1].name == part.name
            lower = below_a_staff or (part.clef.startswith("F") and not (i + 1 < len(parts) and found[i + 1] == _KEYBOARD
                                                                         and parts[i + 1].name == part.name))
            classes.append("keyboard_lower" if lower else "keyboard_upper")
        else:
            classes.append(f or "other")
    return classes
