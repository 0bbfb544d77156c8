"""Bar alignment error (BAE) over interleaved ABC."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.score.bae import BarAlignment, bar_alignment, bar_alignment_of_set, bar_is_aligned, misaligned_bars
from engine.score.notagen_abc import annotate_bars

HEADER = "%%score 1 2\nL:1/8\nM:4/4\nK:C\nV:1 treble\nV:2 bass\n"


def fixture_texts(notagen_reference: Path) -> dict[str, str]:
    folder = notagen_reference / "preprocess"
    texts = {
        f"{p.parent.name}/{p.name}": p.read_text(encoding="utf-8")
        for p in sorted(folder.glob("*/*.abc"))
        if p.name.startswith(("interleaved", "reduced_"))
    }
    assert len(texts) == 12
    return texts


def test_aligned_pieces_have_no_misaligned_bar(notagen_reference: Path) -> None:
    for name, text in fixture_texts(notagen_reference).items():
        body_lines = [line for line in text.splitlines() if "[V:" in line]
        assert bar_alignment(text) == BarAlignment(bars=len(body_lines), misaligned=0), name
        assert bar_alignment(annotate_bars(text)) == bar_alignment(text), name


def test_set_sums_bars(notagen_reference: Path) -> None:
    texts = list(fixture_texts(notagen_reference).values())
    total = bar_alignment_of_set(texts)
    assert total.bars == sum(bar_alignment(t).bars for t in texts) == 81
    assert total.misaligned == 0 and total.rate == 0.0


def test_a_shorter_voice_is_misaligned() -> None:
    text = HEADER + "[V:1]A8|[V:2]C,8|\n[V:1]A4 B2|[V:2]C,8|\n[V:1]c2 (3BAG A4|[V:2]C,4 G,,4|]\n"
    assert misaligned_bars(text) == [1]
    alignment = bar_alignment(text)
    assert alignment == BarAlignment(bars=3, misaligned=1)
    assert alignment.rate == pytest.approx(1 / 3)


def test_an_unparseable_bar_is_misaligned() -> None:
    # `!` inside a chord makes abctoolkit raise; `(0:0:2` makes it return None.
    assert not bar_is_aligned("[V:1]A4 [C!x]4|[V:2]C,8|")
    assert not bar_is_aligned("[V:1](0:0:2A B|[V:2]C,8|")
    assert not bar_is_aligned("[V:1]A8|[V:2]")  # truncated generation: a voice with no barline
    text = HEADER + "[V:1]A8|[V:2]C,8|\n[V:1]A4 [C!x]4|[V:2]C,8|\n"
    assert bar_alignment(text) == BarAlignment(bars=2, misaligned=1)


def test_voices_left_out_by_rest_reduction_do_not_count() -> None:
    text = HEADER + "[V:1]A8|\n[V:2]C,8|\n[V:1]|:A2 B2 c4:|2[V:2]C,8:|2\n"
    assert bar_alignment(text) == BarAlignment(bars=3, misaligned=0)


def test_metadata_and_empty_lines_are_not_bars() -> None:
    assert bar_alignment(HEADER) == BarAlignment(bars=0, misaligned=0)
    assert bar_alignment(HEADER).rate == 0.0
    assert bar_alignment(HEADER + "\n[V:1]A8|[V:2]C,8|\n\n").bars == 1


def test_set_of_pieces_weighs_by_bars() -> None:
    good = HEADER + "[V:1]A8|[V:2]C,8|\n" * 3
    bad = HEADER + "[V:1]A7|[V:2]C,8|\n"
    assert bar_alignment_of_set([good, bad]) == BarAlignment(bars=4, misaligned=1)
    assert bar_alignment_of_set(iter([])) == BarAlignment(0, 0)
