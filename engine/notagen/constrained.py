"""Bar-exact sampling: the char decoder's choices kept inside what `BarConstraint` allows, row by row.

`ConstrainedChooser` is a `TokenChooser` for one `NotagenModel.decode_patch` call. Each call of it is one
char step of the patch for every row; each row follows the text with its own copy of the row's
`BarReader`. The row's sampler draws first; only when its choice is refused is the whole mask built and
the char drawn again from the masked logits (with the same top-k / top-p / temperature). Checking one
char costs a few reader steps, building the mask about thirty times that, and a trained model's choice
is nearly always allowed, so the constraint costs little decoding time. Greedy decoding picks the
likeliest allowed char either way, so a bar that already fits is decoded exactly as without the
constraint. Sampled, a refused draw is replaced by a draw from the filtered, masked distribution.

After a row's EOS the rest of its patch is never read (the engine zeroes it), so it is not constrained.
A row without a reader (its context could not be read, e.g. a voice overlay in a user's score) is
sampled unconstrained.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from engine.notagen.bar_constraint import BarConstraint, logits_mask
from engine.notagen.bar_reader import BOS_CHAR, EOS_CHAR, BarReader
from engine.notagen.patchilizer import BOS_ID, EOS_ID, PAD_ID
from engine.notagen.sampling import Sampler

_SPECIAL_CHARS = {EOS_ID: EOS_CHAR, BOS_ID: BOS_CHAR}


def reader_for(context_ids: Sequence[Sequence[int]]) -> BarReader | None:
    """A reader that has read a generation context as the model reads it (patch ids, each ending early with
    EOS where the patchilizer ends it; a leading BOS patch is skipped), or None where it cannot be read.
    The patch split matters: the next char starts a patch or continues the ragged last one."""
    reader = BarReader()
    for patch in context_ids:
        if patch and patch[0] == BOS_ID:
            continue
        for token in patch:
            if token != PAD_ID and not reader.step(_SPECIAL_CHARS.get(token, chr(token))):
                return None
    return reader


class ConstrainedChooser:
    """One patch's char steps for rows `readers` (copied: the caller keeps its readers until it accepts
    the patch; `readers` afterwards holds each row's state after the patch)."""

    def __init__(self, sampler: Sampler, generators: Sequence[np.random.Generator], readers: Sequence[BarReader | None],
                 constraint: BarConstraint) -> None:
        self.sampler = sampler
        self.generators = list(generators)
        self.readers = [reader.copy() if reader is not None else None for reader in readers]
        self.constraint = constraint
        self.ended = [reader is None for reader in readers]
        self._choose = sampler.chooser(self.generators)

    def __call__(self, logits: Tensor) -> Tensor:
        ids = self._choose(logits)
        refused = [row for row, reader in enumerate(self.readers)
                   if not self.ended[row] and not self.constraint.allows_id(reader, int(ids[row]))]
        if refused:
            allowed = {row: self.constraint.allowed_ids(self.readers[row]) for row in refused}
            for row in [row for row, row_ids in allowed.items() if not row_ids]:
                self.readers[row], self.ended[row] = None, True  # nothing can follow: leave the row unconstrained
                del allowed[row]
            if allowed:
                rows = list(allowed)
                mask = logits_mask([allowed[row] for row in rows], logits.shape[-1], logits.device)
                masked = logits[rows].masked_fill(~mask, float("-inf"))
                ids = ids.clone()
                ids[torch.tensor(rows, device=ids.device)] = self.sampler.chooser([self.generators[row] for row in rows])(masked)
        for row, reader in enumerate(self.readers):
            if self.ended[row]:
                continue
            token = int(ids[row])
            reader.feed(_SPECIAL_CHARS.get(token, chr(token)))
            self.ended[row] = token == EOS_ID
        return ids
