"""Does a generated piece's ensemble match its prompt's instrumentation? (the model card's match share)

A piece's parts are the named staves of its ABC header (`V:` lines with `nm="..."`, the names NotaGen
writes; a piano's second staff has no name), sorted into families by name, in the languages of the training data (Singstimme, Gesang, Chant, Klavier,
Pianoforte, Violoncello ...). The rule per instrumentation is the one the training issue states:

* Chamber: two or more parts, every one a string instrument;
* Art Song: at least one voice and one keyboard, nothing else than voices and keyboards;
* Keyboard: keyboards only;
* Choral: two or more voices, nothing else than voices and keyboards (a continuo or organ part);
* other instrumentations (Vocal-Orchestral, ...): not judged (None).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

FAMILY_WORDS: dict[str, tuple[str, ...]] = {
    "string": ("violin", "viola", "violoncello", "cello", "contrabass", "double bass", "vln", "vla", "vc",
               "violino", "violon", "violone", "bratsche"),
    "keyboard": ("piano", "pianoforte", "klavier", "clavier", "organ", "orgel", "harpsichord", "cembalo",
                 "pno", "pf", "continuo", "harmonium"),
    "voice": ("voice", "soprano", "alto", "tenor", "bass", "baritone", "mezzo", "contralto", "singstimme",
              "stimme", "gesang", "chant", "canto", "cantus", "contratenor", "altus", "bassus", "quintus",
              "sextus", "quinto", "basso", "tenore", "motetus", "triplum", "solo", "choir", "chorus",
              "s", "a", "t", "b"),
}
_WORD = re.compile(r"[a-z]+\.?")
_NAMED_VOICE = re.compile(r'^V:\S+.*?\bnm="([^"]*)"', re.MULTILINE)


def part_family(name: str) -> str:
    """`string`, `keyboard`, `voice` or `other` for a part name (first family whose word it contains)."""
    lowered = name.lower().replace("\\n", " ")
    words = set(_WORD.findall(lowered)) | {word.rstrip(".") for word in _WORD.findall(lowered)}
    for family in ("string", "keyboard", "voice"):
        if any((" " in word and word in lowered) or word in words for word in FAMILY_WORDS[family]):
            return family
    return "other"


def matches_instrumentation(instrumentation: str, part_names: Sequence[str]) -> bool | None:
    """Whether parts of these names are the prompt's instrumentation (module docstring); None: not judged."""
    families = [part_family(name) for name in part_names]
    kinds = set(families)
    if instrumentation == "Chamber":
        return len(families) >= 2 and kinds == {"string"}
    if instrumentation == "Art Song":
        return {"voice", "keyboard"} <= kinds and kinds <= {"voice", "keyboard"}
    if instrumentation == "Keyboard":
        return bool(families) and kinds == {"keyboard"}
    if instrumentation == "Choral":
        return families.count("voice") >= 2 and kinds <= {"voice", "keyboard"}
    return None


def header_part_names(abc: str) -> list[str]:
    """The names of the parts an ABC piece's header declares (its named `V:` lines, in order)."""
    body = re.search(r"^\[[VvrR]:", abc, re.MULTILINE)
    return _NAMED_VOICE.findall(abc[: body.start()] if body else abc)


def piece_matches(instrumentation: str, abc: str) -> bool | None:
    """`matches_instrumentation` for a generated ABC piece's header (False when it names no parts)."""
    return matches_instrumentation(instrumentation, header_part_names(abc))
