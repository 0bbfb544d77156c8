"""Prompt-balanced fine-tuning epochs (training/balance.py)."""
from collections import Counter

from training.balance import BalancedSampler, epoch_counts, prompt_shares

# The shape of the real labelled corpus: one huge choral prompt, many small song prompts, a few quartets.
COUNTS = {"Renaissance_Palestrina_Choral": 1187, "Baroque_Bach_Choral": 351, "Romantic_Brahms_Art Song": 96,
          **{f"Romantic_Song{i}_Art Song": 3 + i for i in range(40)}, "Classical_Haydn_Chamber": 28,
          "Classical_Mozart_Chamber": 11, "Romantic_Schumann_Keyboard": 4}


def _prompts(counts):
    return [prompt for prompt, n in counts.items() for _ in range(n)]


def test_no_prompt_above_the_cap_and_none_repeated_more_than_allowed():
    shares = prompt_shares(COUNTS, max_share=0.15, max_repeat=4.0)
    assert abs(sum(shares.values()) - 1) < 1e-9
    size = sum(COUNTS.values())
    for prompt, share in shares.items():
        assert share <= 0.15 + 1e-12
        assert share * size <= 4.0 * COUNTS[prompt] + 1e-9
    counts = epoch_counts(COUNTS)
    assert counts["Renaissance_Palestrina_Choral"] < COUNTS["Renaissance_Palestrina_Choral"]  # subsampled
    assert counts["Classical_Mozart_Chamber"] > COUNTS["Classical_Mozart_Chamber"]  # oversampled


def test_instrumentations_are_balanced_before_prompts():
    shares = prompt_shares(COUNTS)
    by_instrumentation = Counter()
    for prompt, share in shares.items():
        by_instrumentation[prompt.rsplit("_", 1)[1]] += share
    raw = Counter()
    for prompt, n in COUNTS.items():
        raw[prompt.rsplit("_", 1)[1]] += n / sum(COUNTS.values())
    assert by_instrumentation["Chamber"] > 2 * raw["Chamber"]
    assert by_instrumentation["Choral"] < raw["Choral"]


def test_sampler_epochs_are_deterministic_differ_by_epoch_and_split_by_rank():
    prompts = _prompts(COUNTS)
    sampler = BalancedSampler(prompts, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    again = BalancedSampler(prompts, seed=3)
    again.set_epoch(1)
    assert list(again) == first and len(first) == len(sampler)
    per_prompt = Counter(prompts[i] for i in first)
    assert per_prompt == Counter(sampler.counts)
    sampler.set_epoch(2)
    second = list(sampler)
    palestrina = {i for i in first if prompts[i].startswith("Renaissance_Palestrina")}
    assert palestrina != {i for i in second if prompts[i].startswith("Renaissance_Palestrina")}  # another subset

    ranks = [BalancedSampler(prompts, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    split = [list(r) for r in ranks]
    assert len(split[0]) == len(split[1]) == len(ranks[0])
    sampler.set_epoch(1)
    assert sorted(split[0] + split[1]) == sorted(sampler.epoch_indices()[: 2 * len(split[0])])
