"""Bar-exact decoding (`engine.notagen.constrained`) in the generator."""
from __future__ import annotations

import pytest

from engine.notagen.generate import NotagenGenerator


@pytest.fixture(scope="module")
def trained(notagen_reference) -> NotagenGenerator:
    return NotagenGenerator.load(notagen_reference / "tiny_notagen_trained_fp16.pth")


def test_greedy_bars_that_fit_are_decoded_as_without_the_constraint(trained):
    runs = [trained.generate(None, n=1, top_k=1, max_bars=6, constrain=constrain, max_attempts=1) for constrain in (False, True)]
    free, constrained = (run.pieces[0] for run in runs)
    assert free.alignment.misaligned == 0  # the fixture model writes whole bars greedily...
    assert constrained.text == free.text  # ...and then the constraint changes nothing

