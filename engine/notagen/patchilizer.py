"""NotaGen's "patchilizer": interleaved ABC text <-> patches of 16 character ids.

A reimplementation of the official `Patchilizer` (NotaGen `finetune/utils.py`, `inference/utils.py`,
`pretrain/utils.py`) that reproduces its output exactly, quirks included, because the released weights
were trained on exactly this tokenization. The quirks are listed in the reference fixtures' README
(shared/fixtures/notagen_reference/README.md, "Quirks a reimplementation must reproduce"); comments
below cite them as "quirk N".
"""
from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, Protocol

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
PATCH_SIZE = 16

BARLINES = ("|:", "::", ":|", "[|", "||", "|]", "|")
_BARLINE_SPLIT = re.compile("(" + "|".join(map(re.escape, BARLINES)) + ")")

#: How `encode_train` finds the first tune-body line (quirk 3): the finetune/inference code takes the
#: first line *containing* `[V:`, the pretrain code the first line *starting with* it.
BodyStart = Literal["finetune", "pretrain"]


class Chooser(Protocol):
    """What `encode_train` needs from its random source: `random.choice` semantics."""

    def choice(self, seq: Sequence): ...


class Patchilizer:
    """Official-compatible NotaGen tokenizer (stream mode, the only mode the released models use)."""

    def __init__(self, patch_size: int = PATCH_SIZE) -> None:
        self.patch_size = patch_size

    @property
    def bos_patch(self) -> str:
        """`[1]*15 + [2]`: the first patch of every piece."""
        return chr(BOS_ID) * (self.patch_size - 1) + chr(EOS_ID)

    @property
    def eos_patch(self) -> str:
        """`[1] + [2]*15`: the patch that ends a piece."""
        return chr(BOS_ID) + chr(EOS_ID) * (self.patch_size - 1)

    def split_bars(self, body_lines: Iterable[str]) -> list[str]:
        """Split body lines into bars, each barline starting the bar after it (quirk 5).

        The text before a line's first barline is a bar of its own; a trailing piece without a `V`
        (typically `|\\n`) is merged into the bar before it. As in the official code, a line that cannot be
        split this way (one piece that starts with a barline, e.g. `|\\n`) silently drops itself and
        every later line: the official function wraps the whole loop in a bare try/except.
        """
        bars: list[str] = []
        for line in body_lines:
            line_bars = _split_line(line)
            if line_bars is None:
                break
            bars += line_bars
        return bars

    def split_patches(self, text: str, ragged_last: bool = False) -> list[str]:
        """Cut one line or bar into patches; EOS (chr 2) is appended only when the length is not a
        multiple of the patch size (quirk 2), and never for the ragged last bar of `encode_generate`."""
        if not ragged_last and len(text) % self.patch_size:
            text += chr(EOS_ID)
        return [text[i : i + self.patch_size] for i in range(0, len(text), self.patch_size)]

    def patchilize_metadata(self, metadata_lines: Iterable[str]) -> list[str]:
        """Each header line cut into patches on its own."""
        return [patch for line in metadata_lines for patch in self.split_patches(line)]

    def patchilize_tunebody(self, tunebody_lines: Iterable[str], ragged_last: bool = False) -> list[str]:
        """Each bar cut into patches on its own; `ragged_last` leaves the final bar open (generation)."""
        bars = self.split_bars(tunebody_lines)
        patches = [patch for bar in bars[:-1] for patch in self.split_patches(bar)]
        if bars:
            patches += self.split_patches(bars[-1], ragged_last=ragged_last)
        return patches

    def stream_lines(self, text: str, body_start: BodyStart = "finetune") -> tuple[list[str], list[str]]:
        """Header lines and tune-body lines of a piece, the body lines prefixed `[r:i/j]` (bar line i, j more
        to come) as for training (quirks 3, 4). Empty lines are dropped; every line ends with `\\n`.

        Without any voice line the last line is taken as the body (the official index -1).
        """
        lines = [line + "\n" for line in text.split("\n") if line]
        body_index = _first_index(lines, _contains_voice if body_start == "finetune" else _starts_with_voice, -1)
        metadata_lines, body_lines = lines[:body_index], lines[body_index:]
        last = len(body_lines) - 1
        return metadata_lines, [f"[r:{i}/{last - i}]{line}" for i, line in enumerate(body_lines)]

    def encode_train(
        self,
        text: str,
        patch_length: int,
        add_special_patches: bool = True,
        cut: bool = True,
        rng: Chooser = random,
        body_start: BodyStart = "finetune",
    ) -> list[list[int]]:
        """Training ids of a piece, as the official `encode_train` (quirks 3, 4, 7): `[r:i/j]` bar-line
        prefixes, BOS/EOS patches, a random stream cut when the piece exceeds `patch_length`, patches
        right-padded with 0.

        `rng.choice` is called exactly as the official code calls `random.choice`, so after
        `random.seed(s)` the default `rng=random` picks the same cut as the official code.
        """
        metadata_lines, body_lines = self.stream_lines(text, body_start)
        metadata_patches = self.patchilize_metadata(metadata_lines)
        body_patches = self.patchilize_tunebody(body_lines)
        end = [self.eos_patch] if add_special_patches else []
        if add_special_patches:
            metadata_patches = [self.bos_patch] + metadata_patches
        body_patches += end

        excess = len(metadata_patches) + len(body_patches) - patch_length
        if excess > 0:
            # A cut may start at any body line; the candidates stop at the first one that makes the piece fit.
            cut_indexes = [0] + [i + 1 for i, patch in enumerate(body_patches) if "\n" in patch]
            cut_indexes = cut_indexes[: bisect.bisect_left(cut_indexes, excess) + 1]
            choice = rng.choice(["head", "tail", "middle"][: min(len(cut_indexes), 3)])
            if choice != "head":
                if choice == "tail":
                    first_line = len(cut_indexes) - 1
                else:
                    first_line = rng.choice(range(1, len(cut_indexes) - 1))
                # The official code maps cut index k to body line k, keeping the original [r:] numbers.
                body_patches = self.patchilize_tunebody(body_lines[first_line:]) + end

        patches = metadata_patches + body_patches
        if cut:
            patches = patches[:patch_length]
        return [self._ids(patch, pad=True) for patch in patches]

    def encode_generate(self, text: str, patch_length: int, add_special_patches: bool = True) -> list[list[int]]:
        """Context ids for generation, as the official `encode_generate` (quirks 3, 6).

        The body starts at the first line beginning with `[V:` or `[r:`; `[r:]` prefixes must already be
        there. The last bar gets no EOS and, when shorter than a patch, stays unpadded (ragged): its ids
        become the char decoder's prefix. Without any body line, every line counts as both header and body.
        """
        lines = [line for line in text.split("\n") if line]
        body_index = _first_index(lines, _starts_body, None)
        metadata_lines = [line + "\n" for line in lines[:body_index]]
        body_lines = [line + "\n" for line in lines[body_index:]]
        if body_lines and not text.endswith("\n"):
            body_lines[-1] = body_lines[-1][:-1]

        patches = self.patchilize_metadata(metadata_lines) + self.patchilize_tunebody(body_lines, ragged_last=True)
        if add_special_patches:
            patches = [self.bos_patch] + patches
        patches = patches[:patch_length]
        return [self._ids(patch, pad=len(patch) == self.patch_size or patch.endswith(chr(EOS_ID))) for patch in patches]

    def decode(self, patches: Iterable[Sequence[int]]) -> str:
        """Text of id patches: each patch stops at its first EOS; ids 0 and 1 are kept as chr(0)/chr(1)
        (quirk 8), so BOS/EOS patches decode to control characters as in the official code."""
        return "".join(_patch_text(patch) for patch in patches)

    def _ids(self, patch: str, pad: bool) -> list[int]:
        ids = [ord(char) for char in patch]
        return ids + [PAD_ID] * (self.patch_size - len(ids)) if pad else ids


def _split_line(line: str) -> list[str] | None:
    """One line's bars (see `Patchilizer.split_bars`), or None where the official code raises."""
    pieces = [piece for piece in _BARLINE_SPLIT.split(line) if piece]
    if len(pieces) == 1:
        return pieces
    if not pieces:
        return None
    # Pair each barline with the text after it; text before the first barline stands alone.
    start = 0 if pieces[0] in BARLINES else 1
    if (len(pieces) - start) % 2:
        return None  # the official pairing indexes past the end
    bars = pieces[:start] + [pieces[i] + pieces[i + 1] for i in range(start, len(pieces), 2)]
    if "V" not in bars[-1]:
        if len(bars) == 1:
            return None  # the official merge indexes bars[-2]
        bars = bars[:-2] + [bars[-2] + bars[-1]]
    return bars


def _patch_text(patch: Sequence[int]) -> str:
    chars = []
    for token in patch:
        if token == EOS_ID:
            break
        chars.append(chr(token))
    return "".join(chars)


def _first_index(lines: Sequence[str], predicate: Callable[[str], bool], default: int | None) -> int | None:
    return next((i for i, line in enumerate(lines) if predicate(line)), default)


def _contains_voice(line: str) -> bool:
    return "[V:" in line


def _starts_with_voice(line: str) -> bool:
    return line.startswith("[V:")


def _starts_body(line: str) -> bool:
    return line.startswith(("[V:", "[r:"))
