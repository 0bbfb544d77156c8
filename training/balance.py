"""Prompt balance for NotaGen fine-tuning: how many steps each prompt gets, and a sampler that follows it.

The labelled corpus is lopsided (1,187 Palestrina mass movements beside a few pieces per song composer),
and a model fine-tuned on it as it is learns to write Palestrina for every prompt. The fine-tuning epoch
is therefore drawn per prompt, not per piece:

* each instrumentation's share of the epoch is proportional to n**alpha (n: its training pieces; alpha
  0.5 is the usual temperature sampling over unequal groups), each prompt's share of it likewise, then
  every prompt is capped at `max_share` with the excess handed to the others in proportion
  (water-filling), so no prompt has more than `max_share` of the steps;
* a prompt's pieces appear `floor(c / n)` times plus a fresh random subset for the remainder, and a
  small prompt repeats at most `max_repeat` times per epoch (more would memorise it);
* which subset a large prompt contributes changes from epoch to epoch (seeded by seed and epoch), so
  resuming or running on N processes gives the same order.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence


def capped_shares(weights: dict[str, float], caps: dict[str, float]) -> dict[str, float]:
    """Normalise `weights` to shares, none above its cap: the excess goes to the others in proportion
    (water-filling). When the caps add up to 1 or less they cannot all hold (too few entries): the shares
    are then the caps, normalised."""
    if sum(caps.values()) <= 1.0:
        return {key: cap / sum(caps.values()) for key, cap in caps.items()}
    capped: dict[str, float] = {}
    while True:
        free = 1.0 - sum(capped.values())
        rest = {key: w for key, w in weights.items() if key not in capped}
        total = sum(rest.values())
        over = [key for key, w in rest.items() if w / total * free > caps[key]]
        if not over:
            return {**capped, **{key: w / total * free for key, w in rest.items()}}
        capped.update((key, caps[key]) for key in over)


def instrumentation(prompt: str) -> str:
    """The instrumentation of a `Period_Composer_Instrumentation` prompt (the group it is balanced in)."""
    return prompt.rsplit("_", 1)[-1]


def prompt_shares(counts: dict[str, int], alpha: float = 0.5, max_share: float = 0.15,
                  max_repeat: float = 4.0) -> dict[str, float]:
    """The share of the fine-tuning epoch (as many pieces as `counts` holds) of each prompt, in two levels:
    each instrumentation gets a weight n**alpha (n: its pieces), each prompt within it n**alpha of the
    instrumentation's; a prompt's share is capped at `max_share` and at `max_repeat` times its pieces.

    Two levels, because the app is judged on writing the prompt's instrumentation, and a per-prompt
    weight alone would give the 100-odd song composers most of the steps and the quartets a few percent.
    """
    groups: dict[str, dict[str, int]] = {}
    for prompt, n in counts.items():
        groups.setdefault(instrumentation(prompt), {})[prompt] = n
    group_weight = {group: sum(members.values()) ** alpha for group, members in groups.items()}
    total = sum(group_weight.values())
    weights = {}
    for group, members in groups.items():
        within = sum(n ** alpha for n in members.values())
        weights.update((prompt, group_weight[group] / total * n ** alpha / within) for prompt, n in members.items())
    size = sum(counts.values())
    return capped_shares(weights, {prompt: min(max_share, max_repeat * n / size) for prompt, n in counts.items()})


def epoch_counts(counts: dict[str, int], alpha: float = 0.5, max_share: float = 0.15,
                 max_repeat: float = 4.0) -> dict[str, int]:
    """Pieces each prompt contributes to one epoch as long as the number of pieces (`prompt_shares`)."""
    size = sum(counts.values())
    shares = prompt_shares(counts, alpha, max_share, max_repeat)
    return {prompt: max(1, int(shares[prompt] * size)) for prompt in counts}


class BalancedSampler:
    """Indices of one fine-tuning epoch, balanced by prompt (see the module docstring), for one process.

    The interface of `DistributedSampler` that the trainer uses: `set_epoch`, `len`, iteration. The
    epoch is shuffled and cut to a multiple of `num_replicas`; process `rank` takes every
    `num_replicas`-th index from `rank`.
    """

    def __init__(self, prompts: Sequence[str], num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 alpha: float = 0.5, max_share: float = 0.15, max_repeat: float = 4.0) -> None:
        self.by_prompt: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            self.by_prompt.setdefault(prompt, []).append(index)
        self.counts = epoch_counts({p: len(ix) for p, ix in self.by_prompt.items()}, alpha, max_share, max_repeat)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.total = sum(self.counts.values()) // num_replicas * num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.num_replicas

    def epoch_indices(self) -> list[int]:
        """Every process's indices of the current epoch, in order (before the split by rank)."""
        rng = random.Random(f"balanced/{self.seed}/{self.epoch}")
        chosen: list[int] = []
        for prompt in sorted(self.by_prompt):
            pieces, count = self.by_prompt[prompt], self.counts[prompt]
            whole, remainder = divmod(count, len(pieces))
            chosen += pieces * whole + rng.sample(pieces, remainder)
        rng.shuffle(chosen)
        return chosen[: self.total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.rank :: self.num_replicas])


def epoch_table(sampler: BalancedSampler) -> list[dict]:
    """Per prompt: training pieces, pieces per epoch and share of the epoch (for the run log and the card)."""
    counts = Counter({prompt: len(indices) for prompt, indices in sampler.by_prompt.items()})
    total = sum(sampler.counts.values())
    return [{"prompt": prompt, "pieces": n, "per_epoch": sampler.counts[prompt],
             "share": sampler.counts[prompt] / total} for prompt, n in counts.most_common()]
