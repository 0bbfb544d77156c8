"""Bar-exact sampling: the char decoder's choices kept inside what `BarConstraint` allows, row by row.

`ConstrainedChooser` is a `TokenChooser` for one `NotagenModel.decode_patch` call. Each call of it is one
char step of the patch for every row; each row follows the text with its own copy of the row's
`BarReader`. The row's sampler draws first, and its choice is tested on a copy of the reader that reads it
(`BarConstraint.advance`), kept as the row's reader when the choice is allowed. Only when it is refused is
the char drawn again from the masked logits (with the same top-k / top-p / temperature):
`sampling.masked_probs` tests ids from the likeliest down until the filters' choice is known (a handful of
tests, memoised by `BarConstraint.id_tester`). Where no id is found that way (no musical id is allowed, or
the allowed ids' probabilities underflow) the whole mask is built, reusing those tests, and the sampler
draws from the masked logits. Where the mask leaves one id that id is taken without sampling, but the
row's generator still advances by the one uniform a draw uses, so the row's later draws are unchanged.
Greedy decoding picks the likeliest allowed char either way, so a bar that already fits is decoded exactly
as without the constraint. Sampled, a refused draw is replaced by a draw from the filtered, masked distribution.

After a row's EOS the rest of its patch is never read (the engine zeroes it), so it is not constrained.
A row without a reader (its context could not be read, e.g. a voice overlay in a user's score) is
sampled unconstrained.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from engine.notagen.bar_constraint import BarConstraint, logits_mask, token_char
from engine.notagen.bar_reader import BarReader
from engine.notagen.patchilizer import BOS_ID, EOS_ID, PAD_ID
from engine.notagen.sampling import Sampler, draw_row, masked_probs, ranked_probs


def reader_for(context_ids: Sequence[Sequence[int]]) -> BarReader | None:
    """A reader that has read a generation context as the model reads it (patch ids, each ending early with
    EOS where the patchilizer ends it; a leading BOS patch is skipped), or None where it cannot be read.
    The patch split matters: the next char starts a patch or continues the ragged last one."""
    reader = BarReader()
    for patch in context_ids:
        if patch and patch[0] == BOS_ID:
            continue
        for token in patch:
            if token != PAD_ID and not reader.step(token_char(token)):
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
        self._draw = lambda logits: sampler.draw(logits, self.generators)

    def __call__(self, logits: Tensor) -> Tensor:
        ids, ranked = self._draw(logits)
        chosen = ids.tolist()
        constraint, refused = self.constraint, []
        for row, reader in enumerate(self.readers):  # each row's own choice, tested on the reader it moves on
            if not self.ended[row]:
                after = constraint.advance(reader, chosen[row])
                if after is None:
                    refused.append(row)
                else:
                    self.readers[row], self.ended[row] = after, chosen[row] == EOS_ID
        redraw = {}
        greedy = self.sampler.options.greedy
        for row in refused:
            reader = self.readers[row]
            tester = constraint.id_tester(reader)
            if ranked is None:  # greedy: the first draw did not rank the ids
                ranked = ranked_probs(logits)
            kept = masked_probs((ranked[0][row], ranked[1][row]), self.sampler.options, tester)
            if kept is not None:
                chosen[row] = kept[0][0] if greedy else draw_row(*kept, self.generators[row])
                continue
            allowed = constraint.tested_ids(tester) or constraint.allowed_ids(reader)
            if not allowed:
                self.readers[row], self.ended[row] = None, True  # nothing can follow: leave the row unconstrained
            elif len(allowed) == 1:  # what the sampler draws from a one-id mask, and the draw it uses up
                chosen[row] = allowed[0]
                if not greedy:
                    self.generators[row].random()
            else:
                redraw[row] = allowed
        if redraw:
            rows = list(redraw)
            mask = logits_mask(list(redraw.values()), logits.shape[-1], logits.device)
            masked = logits[rows].masked_fill(~mask, float("-inf"))
            drawn = self.sampler.chooser([self.generators[row] for row in rows])(masked).tolist()
            for row, token in zip(rows, drawn):
                chosen[row] = token
        for row in refused:
            if not self.ended[row]:
                self.readers[row].feed(token_char(chosen[row]))
                self.ended[row] = chosen[row] == EOS_ID
        return torch.tensor(chosen, dtype=ids.dtype, device=ids.device) if refused else ids
