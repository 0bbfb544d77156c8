"""Token sampling for NotaGen generation: top-k, top-p (nucleus) and temperature, seedable and batched.
The settings and their defaults (`SamplingOptions`) live in the torch-free `engine.notagen.options`.

The official generator (`NotaGenLMHeadModel.generate`, package `samplings`) turns each char's logits into
`probs = softmax(logits)` (float32) and then applies, in this order, `top_k_sampling` (keep the k most
probable ids), `top_p_sampling` (keep the smallest most-probable set whose mass reaches p; the id that
crosses p is kept) and `temperature_sampling` (`probs ** (1/T)`, renormalised, i.e. `softmax(log p / T)`),
renormalising after each step, and finally draws one id with `np.random.choice`. `filtered_probs` is the
same maths, vectorised over the batch in float64. Differences from the official code, on purpose:

* randomness never comes from global state: every batch row has its own `numpy.random.Generator`
  (`row_generators`), so a seed reproduces a piece, and row i of a batch does not depend on how many
  other rows there are (up to float rounding, see `engine.notagen.generate`);
* `safe_normalize_probs`' 1e-12 floor is not added (it only guards against NaN; a filtered-out id keeps
  probability 0 here instead of ~1e-10);
* `top_k=1` or `temperature=0` is exact argmax on the logits (the official top_k=1 samples the argmax
  with probability ~1), so it equals `greedy`/`greedy_continue` token for token;
* NaN-safety: a row whose logits hold NaN or +inf, or are all -inf, raises `ModelError` (corrupt
  weights or float16 overflow); the official code would sample from garbage. There is no silent greedy
  fallback, because a model producing NaN produces nothing meaningful greedily either.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

import numpy as np
import torch
from torch import Tensor

from engine.errors import ModelError
from engine.notagen.model import TokenChooser
from engine.notagen.options import SamplingOptions


def check_logits(logits: Tensor) -> None:
    """Raise `ModelError` unless every row can be sampled: no NaN, no +inf, not all -inf."""
    if torch.isnan(logits).any() or torch.isposinf(logits).any() or torch.isneginf(logits).all(dim=-1).any():
        raise ModelError(
            "the model produced NaN or infinite scores (corrupt weights, or overflow in reduced precision); "
            "generation stopped"
        )


def ranked_probs(logits: Tensor) -> tuple[Tensor, Tensor]:
    """The softmax of raw logits [B, V] (float32, as the official code computes it, then float64) sorted
    from the likeliest id down (stable: equal ids in id order), and the ids in that order [B, V]."""
    return torch.softmax(logits.float(), dim=-1).double().sort(dim=-1, descending=True, stable=True)


def filtered_probs(logits: Tensor, options: SamplingOptions, ranked: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """The official sampling distribution [B, V] (float64) of raw logits [B, V]: softmax, top-k, top-p,
    temperature, each renormalised. `ranked`: the logits' `ranked_probs`, where the caller has them."""
    sorted_probs, order = ranked if ranked is not None else ranked_probs(logits)
    if options.top_k > 0:
        sorted_probs = sorted_probs.clone()
        sorted_probs[:, options.top_k :] = 0.0
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    if options.top_p < 1.0:
        cumulative = sorted_probs.cumsum(dim=-1)
        remove = cumulative > options.top_p
        remove[:, 1:] = remove[:, :-1].clone()  # keep the id that crosses top_p
        remove[:, 0] = False
        sorted_probs = sorted_probs.masked_fill(remove, 0.0)
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    if options.temperature != 1.0:
        sorted_probs = sorted_probs ** (1.0 / options.temperature)
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    return torch.zeros_like(sorted_probs).scatter_(-1, order, sorted_probs)


def masked_probs(ranked: tuple[Tensor, Tensor], options: SamplingOptions, allowed: Callable[[int], bool],
                 limit: int | None = None) -> tuple[list[int], list[float]] | None:
    """`filtered_probs` of one row's logits with every id that `allowed` refuses masked out (given as the
    row's `ranked_probs`, [V] each, which the sampler's first draw made already), as the ids it
    keeps (likeliest first) and their probabilities, found by testing ids from the likeliest down; None where
    more than `limit` tests (default: no limit) would be needed, or where no allowed id has a probability
    above 0 (the caller then masks the logits).

    Why: testing an id costs the constraint far more than the model's step, and the filters need only the
    top of the masked distribution. Top-k keeps the k likeliest allowed ids; top-p keeps the likeliest of
    those up to the one whose cumulative share crosses p. Where fewer than k allowed ids have been found, the
    share's denominator is bounded by the untested mass (each untested id is at most as likely as the last
    tested), and the crossing is known once it is the same for every denominator in the bounds. Equal to
    the full mask's `filtered_probs` up to float rounding (its ids are the same; greedy: the first allowed id).
    Sparse lists, not a [V] tensor: a refused row's redraw is a handful of ids, and building and reading
    back a tensor cost more than the whole draw (`bench/constraint_replay.py`)."""
    sorted_list, order_list = ranked[0].tolist(), ranked[1].tolist()
    keep = 1 if options.greedy else options.top_k
    found: list[int] = []
    found_mass: list[float] = []
    tested_mass = lowest = 0.0
    for tested, (token, mass) in enumerate(zip(order_list[:limit], sorted_list), start=1):
        tested_mass += mass
        if allowed(token):
            found.append(token)
            found_mass.append(mass)
            items = found_mass[:keep] if keep else found_mass
            lowest = sum(items)
        if not found:
            continue
        complete = (keep and len(found) >= keep) or tested == len(order_list)
        if complete:
            highest = lowest
        else:
            untested = max(1.0 - tested_mass, 0.0)
            highest = lowest + (min(untested, (keep - len(found)) * mass) if keep else untested)
        if options.top_p < 1.0:  # (no id crosses p of a total that may reach `highest` while lowest <= p * highest)
            kept = _top_p_crossing(items, options.top_p, lowest, highest) if lowest > options.top_p * highest else None
        else:
            kept = len(items) if complete else None
        if kept is None:
            continue
        if options.temperature != 1.0 and not options.greedy:
            weights = [mass ** (1.0 / options.temperature) for mass in found_mass[:kept]]
        else:
            weights = found_mass[:kept]
        total = sum(weights)
        return found[:kept], [weight / total for weight in weights]
    return None


def _top_p_crossing(items: list[float], top_p: float, lowest: float, highest: float) -> int | None:
    """How many of `items` (probabilities, likeliest first) top-p keeps for every total in [lowest, highest]
    (the id that crosses p is kept), or None where that depends on the total or lies past the items."""
    cumulative = 0.0
    for index, mass in enumerate(items):
        if cumulative > top_p * lowest:
            return None  # an earlier id may have crossed for some total
        cumulative += mass
        if cumulative > top_p * highest:
            return index + 1
    return None


def draw(probs: Tensor, generators: Sequence[np.random.Generator]) -> Tensor:
    """One id per row of `probs` [B, V], row i drawn with `generators[i]` (inverse CDF of one uniform)."""
    cdf = probs.cumsum(dim=-1)
    uniforms = torch.tensor([g.random() for g in generators], dtype=cdf.dtype, device=cdf.device)
    threshold = (uniforms * cdf[:, -1]).unsqueeze(-1)
    ids = (cdf <= threshold).sum(dim=-1)
    # Rounding can push the threshold past the last id with mass; fall back to that id.
    last_with_mass = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1)
    return torch.minimum(ids, last_with_mass)


def draw_row(ids: Sequence[int], probs: Sequence[float], generator: np.random.Generator) -> int:
    """`draw` of one row given sparsely (`masked_probs`' ids and probabilities; every other id has
    probability 0), in Python: the same cumulative sums in id order (the CPU's `cumsum` adds left to right,
    and adding a zero changes no sum), the same threshold, the same id."""
    pairs = sorted(zip(ids, probs))
    cdf = list(accumulate(mass for _, mass in pairs))
    threshold = generator.random() * cdf[-1]
    last_with_mass = max(index for index, (_, mass) in enumerate(pairs) if mass > 0)
    return pairs[min(bisect_right(cdf, threshold), last_with_mass)][0]  # the first id whose cdf passes the threshold


def row_generators(seed: int | None, n: int) -> list[np.random.Generator]:
    """`n` independent generators from one seed (None: fresh OS entropy). Row i's stream depends only on
    (seed, i), not on `n`."""
    root = np.random.SeedSequence(seed)
    if seed is None:
        return [np.random.default_rng(child) for child in root.spawn(n)]
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))) for i in range(n)]


class Sampler:
    """Draws one id per batch row with the row's own generator; makes `TokenChooser`s for
    `NotagenModel.decode_patch` that do so."""

    def __init__(self, options: SamplingOptions) -> None:
        self.options = options

    def draw(self, logits: Tensor, generators: Sequence[np.random.Generator]) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """One id per row of raw logits [B, V], row i drawn with `generators[i]`, and the `ranked_probs` it
        drew from (None where greedy), which a constrained row's redraw reuses."""
        check_logits(logits)
        if self.options.greedy:
            return logits.argmax(dim=-1), None
        ranked = ranked_probs(logits)
        return draw(filtered_probs(logits, self.options, ranked), generators), ranked

    def chooser(self, generators: Sequence[np.random.Generator]) -> TokenChooser:
        """A chooser for a batch whose row i draws from `generators[i]`."""
        return lambda logits: self.draw(logits, generators)[0]
