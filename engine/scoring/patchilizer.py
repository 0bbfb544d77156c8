"""M3's patchilizer: ABC text -> 64-id patches, one per metadata line and one per bar.

It reproduces the official `M3Patchilizer` of CLaMP 2 exactly, quirks included (pinned by
`tests/test_scoring.py` against the official outputs):

* the text is first transliterated to ASCII with `unidecode`;
* a line starting with `%%` or with a letter and `:` is one patch; other lines are split at barlines
  with the barline kept at the *end* of its bar, text after the last barline is dropped, and the
  line's last bar gets its `\\n` back (a line without barlines, such as `%Baroque`, yields nothing);
* a patch is `[BOS] + ords + [EOS]`, truncated to 64 (a long bar loses its EOS) and padded with 0;
* the special BOS / EOS patches are `[1]*64` and `[1] + [2]*63`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from unidecode import unidecode

PATCH_SIZE = 64
PAD_ID, BOS_ID, EOS_ID, MASK_ID = 0, 1, 2, 3
BARLINES = ("|:", "::", ":|", "[|", "||", "|]", "|")
_BARLINE_SPLIT = re.compile("(" + "|".join(map(re.escape, BARLINES)) + ")")
_LINES = re.compile(r".*?\n|.*$")


def _split_bars(line: str) -> list[str]:
    """Bars of one body line, each ending with its barline; text after the last barline is dropped."""
    pieces = [piece for piece in _BARLINE_SPLIT.split(line) if piece]
    if pieces and pieces[0] in BARLINES and len(pieces) > 1:
        pieces = [pieces[0] + pieces[1]] + pieces[2:]
    return [pieces[2 * i] + pieces[2 * i + 1] for i in range(len(pieces) // 2)]


def _is_single_patch_line(line: str) -> bool:
    return len(line) > 1 and ((line[0].isalpha() and line[1] == ":") or line.startswith("%%"))


def patch_strings(text: str, add_special_patches: bool = False, patch_size: int = PATCH_SIZE) -> list[str]:
    """The text of each patch before it becomes ids (special patches as chr(1)/chr(2) runs)."""
    lines = [line for line in _LINES.findall(unidecode(text)) if line]
    patches: list[str] = []
    for line in lines:
        if _is_single_patch_line(line):
            patches.append(line)
            continue
        bars = _split_bars(line)
        if bars:
            bars[-1] += "\n"
            patches.extend(bars)
    if add_special_patches:
        patches = [chr(BOS_ID) * patch_size, *patches, chr(EOS_ID) * patch_size]
    return patches


def patch_ids(patch: str, patch_size: int = PATCH_SIZE) -> list[int]:
    """`[BOS] + ords + [EOS]`, cut to `patch_size` and padded with PAD."""
    ids = ([BOS_ID] + [ord(char) for char in patch] + [EOS_ID])[:patch_size]
    return ids + [PAD_ID] * (patch_size - len(ids))


def encode(text: str, add_special_patches: bool = False, patch_size: int = PATCH_SIZE) -> list[list[int]]:
    """ABC text -> patches of `patch_size` ids (no truncation to a patch count: callers segment)."""
    return [patch_ids(patch, patch_size) for patch in patch_strings(text, add_special_patches, patch_size)]


def decode(patches: Iterable[Sequence[int]]) -> str:
    """Patches -> text; ids <= MASK_ID (pad, BOS, EOS, mask) are dropped."""
    return "".join(chr(i) for patch in patches for i in patch if i > MASK_ID)


def drop_comment_lines(text: str) -> str:
    """Removes `%` comment lines but keeps `%%` directives, as NotaGen's CLaMP 2 extraction does."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("%") or line.startswith("%%"))
