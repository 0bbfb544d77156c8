"""The reference driver: greedy, batch 1; mirrors `inference.py::inference_patch` of the official code
(fixtures README, section D) up to the point where the context fills `patch_length` (there it stops and
says so). Checked token for token against the official fixtures; `BatchEngine` follows the same rules
(`BODY_START`, `zero_after_eos`) with sampling, batching and limits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.notagen.finish import text_lines
from engine.notagen.model import NotagenModel
from engine.notagen.patchilizer import BOS_ID, EOS_ID, PAD_ID, Patchilizer

#: The official loop forces the first tune-body patch to start with these chars (bar 0 of the stream).
BODY_START = "[r:0/"


@dataclass(frozen=True)
class GeneratedPatch:
    """One generation step that added a patch to the context."""

    predicted: tuple[int, ...]
    """The 16 predicted ids (starting with `[r:0/` when forced)."""
    appended: tuple[int, ...]
    """The ids added to the context: `predicted` with every id after the first EOS set to 0."""
    text: str
    """The chars the patch adds to the piece (`decode([predicted])`)."""
    discarded: tuple[int, ...] | None
    """When the body start was forced: the prediction that was thrown away for it."""


@dataclass(frozen=True)
class Continuation:
    """The result of `greedy_continue`."""

    text: str
    """The generated chars (without the prompt)."""
    patches: tuple[GeneratedPatch, ...]
    ended: bool
    """The model predicted the EOS patch: the piece is complete."""
    context_full: bool
    """Stopped because the context reached `patch_length` patches (the official loop would stream on)."""
    context: tuple[int, ...]
    """The final flat context ids (BOS patch, prompt patches, appended patches)."""


def greedy_continue(
    model: NotagenModel,
    patchilizer: Patchilizer,
    prompt_text: str,
    max_patches: int | None = None,
    force_body_start: bool = False,
) -> Continuation:
    """Continue a header-only prompt patch by patch, following the official loop's rules.

    The prompt lines are patchilized as header lines after a BOS patch. The first predicted patch that
    starts with `[r:` is replaced by one predicted from the forced prefix `[r:0/` (`force_body_start`
    forces this on the first step, whatever the model predicts). Generation stops at the EOS patch, after
    `max_patches` generated patches, or when the context is full. Chars are chosen by argmax.
    """
    size = model.config.patch_size
    prompt = [patchilizer.bos_patch] + patchilizer.patchilize_metadata(text_lines(prompt_text))
    context = [[ord(char) for char in patch] + [PAD_ID] * (size - len(patch)) for patch in prompt]
    cache = model.encode_patches(torch.tensor([context], device=model.device))
    forced_prefix = torch.tensor([[ord(char) for char in BODY_START]], device=model.device)

    body_started, ended, generated = False, False, []
    while (max_patches is None or len(generated) < max_patches) and cache.num_patches < model.config.patch_length:
        predicted = model.decode_patch(cache.last_hidden)[0].tolist()
        discarded = None
        if not body_started and (force_body_start or patchilizer.decode([predicted]).startswith("[r:")):
            body_started, discarded = True, tuple(predicted)
            predicted = forced_prefix[0].tolist() + model.decode_patch(cache.last_hidden, forced_prefix)[0].tolist()
        if predicted[0] == BOS_ID and predicted[1] == EOS_ID:
            ended = True
            break
        appended = zero_after_eos(predicted)
        generated.append(GeneratedPatch(tuple(predicted), tuple(appended), patchilizer.decode([predicted]), discarded))
        context.append(appended)
        cache = model.encode_patches(torch.tensor([[appended]], device=model.device), cache)

    return Continuation(
        text="".join(patch.text for patch in generated),
        patches=tuple(generated),
        ended=ended,
        context_full=not ended and cache.num_patches >= model.config.patch_length,
        context=tuple(token for patch in context for token in patch),
    )


def zero_after_eos(patch: list[int]) -> list[int]:
    """The official loop pads a predicted patch with 0 after its first EOS before it joins the context."""
    if EOS_ID not in patch:
        return list(patch)
    end = patch.index(EOS_ID) + 1
    return patch[:end] + [PAD_ID] * (len(patch) - end)
