"""The measure model: shapes, finite losses, a training step that learns, exact-length decoding, files."""
import random
from fractions import Fraction

import music21
import pytest
import torch

from engine.measure.batch import make_batch
from engine.measure.context import MeasureLM, grid_layout_for
from engine.measure.model import KEY_FUNCTIONS, MeasureConfig
from engine.measure.representation import from_score

torch.set_num_threads(1)  # the tests share a small machine; one thread is also faster for these tiny tensors


def tiny_config(**overrides) -> MeasureConfig:
    values = dict(
        d_note=16, d_chord=16, d_digit=4, d_dur=8, d_voice_lstm=16, d_voice=24, d_measure=32, d_chord_dec=24,
        d_voice_dec=32, d_measure_dec=24, mem_key=8, mem_val=8, d_model=32, n_heads=2, layers=["lstm1", "attn", "lstm2"],
        query_layers=1, dropout=0.0, instruments=["<unk>", "soprano", "alto", "tenor", "bass"],
        beat_units=["other", "1/2", "1", "3/2", "2"], max_events=8, max_notes=2, max_voices=2,
    )
    values.update(overrides)
    return MeasureConfig(**values)


@pytest.fixture(scope="module")
def chorale():
    return from_score(music21.corpus.parse("bach/bwv66.6"))


def _inputs(config, grid, columns=4):
    cells = [row[:columns] for row in grid.cells]
    layout, flat = grid_layout_for(config, cells, ["soprano", "alto", "tenor", "bass"])
    batch = make_batch(flat, list(config.beat_units), shuffle_notes=random.Random(0))
    return batch, layout, torch.arange(len(flat)).view(1, -1)


@pytest.mark.parametrize("key_function", KEY_FUNCTIONS)
@pytest.mark.parametrize("reader", ["attention", "position"])
def test_encode_shapes_and_finite_loss(chorale, key_function, reader):
    torch.manual_seed(0)
    config = tiny_config(key_function=key_function, reader=reader)
    model = MeasureLM(config)
    batch, layout, index = _inputs(config, chorale)
    h, memory = model.measure.encode(batch)
    assert h.shape == (16, config.d_measure)
    assert memory.shape == (16, config.mem_key, config.mem_val)
    masked = torch.zeros(1, 16, dtype=torch.bool)
    masked[0, ::3] = True
    out = model.csd_loss(batch, layout, index, masked, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["n_masked"] == 6
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_masked_training_step_reduces_loss(chorale):
    torch.manual_seed(0)
    config = tiny_config()
    model = MeasureLM(config)
    batch, layout, index = _inputs(config, chorale, columns=2)
    masked = torch.zeros(1, 8, dtype=torch.bool)
    masked[0, 1::2] = True
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(6):
        out = model.csd_loss(batch, layout, index, masked, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["nll_masked"].item())
    assert losses[-1] < 0.8 * losses[0]


def test_ar_model_loss(chorale):
    torch.manual_seed(0)
    config = tiny_config(kind="ar", layers=["attn"])
    model = MeasureLM(config)
    batch, layout, index = _inputs(config, chorale, columns=3)
    out = model.ar_loss(batch, layout, index)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


@pytest.mark.parametrize("beat_unit,n_beats,pad_before,content", [
    (Fraction(1), 4, Fraction(0), None), (Fraction(3, 2), 2, Fraction(0), None),
    (Fraction(1), 3, Fraction(2), Fraction(1)), (Fraction(1), 4, Fraction(0), Fraction(5, 2)),
])
def test_length_constrained_decoding_is_exact(beat_unit, n_beats, pad_before, content):
    torch.manual_seed(0)
    model = MeasureLM(tiny_config(max_events=4)).eval()  # few events: the greedy fill must still finish
    for seed in range(3):
        cell = model.measure.decode_cell(torch.randn(32), torch.randn(8, 8), beat_unit, n_beats,
                                         generator=torch.Generator().manual_seed(seed), pad_before=pad_before,
                                         content_beats=content)
        assert cell.voices
        for voice in cell.voices:
            assert sum(e.duration for e in voice) == n_beats
            assert all(e.duration <= 1 for e in voice)
            position = Fraction(0)
            for event in voice:  # no event crosses a beat; padding exactly where asked
                assert int(position) == int(position + event.duration) or (position + event.duration) % 1 == 0
                inside = pad_before <= position < pad_before + (content if content is not None else n_beats)
                assert event.pad == (not inside)
                position += event.duration


def test_config_json_and_safetensors_round_trip(tmp_path, chorale):
    torch.manual_seed(0)
    config = tiny_config(key_function="skewgauss")
    assert MeasureConfig.from_dict(config.to_dict()) == config
    model = MeasureLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = MeasureLM.from_pretrained(tmp_path)
    assert loaded.config == config
    batch, layout, index = _inputs(config, chorale)
    masked = torch.ones(1, 16, dtype=torch.bool)
    with torch.no_grad():
        a = model.csd_loss(batch, layout, index, masked)["loss"]
        b = loaded.csd_loss(batch, layout, index, masked)["loss"]
    assert torch.equal(a, b)
    names = set(loaded.state_dict())
    assert {"measure.note.pitch.weight", "measure.chord_enc.proj.weight", "context.mask"} <= names


@pytest.mark.parametrize("kind", ["concurrent", "single"])
@pytest.mark.parametrize("ablation", [{}, {"position_signal": False}, {"memory": False}])
def test_ablation_tasks_train(chorale, kind, ablation):
    """The paper's isolated tasks (section 5.3) and its ablations give finite losses that a few steps lower."""
    torch.manual_seed(0)
    model = MeasureLM(tiny_config(kind=kind, **ablation))
    batch, layout, index = _inputs(model.config, chorale, columns=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(6):
        out = model.ar_loss(batch, layout, index)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def _context_with_one_cell_changed(kind, chorale, token):
    """(layout, memory grid, context outputs, context outputs with grid token `token`'s encoding moved)."""
    torch.manual_seed(0)
    model = MeasureLM(tiny_config(kind=kind)).eval()
    batch, layout, index = _inputs(model.config, chorale, columns=3)
    h, memory = model.measure.encode(batch)
    hg, mg = model._to_grid(h, memory, index)
    changed = hg.clone()
    changed[0, token] += 1.0
    return layout, mg, model.context(hg, mg, layout), model.context(changed, mg, layout)


def test_concurrent_context_sees_only_the_other_parts_of_the_column(chorale):
    """A cell's decoder input must not depend on its own measure nor on other columns."""
    layout, mg, (c, m), (c2, _) = _context_with_one_cell_changed("concurrent", chorale, 0)  # part 0, column 0
    same_column_others = (layout.column[0] == 0) & (layout.part[0] != 0)
    assert torch.allclose(c2[0, 0], c[0, 0], atol=1e-5)  # (sum - own) is exact only up to rounding
    assert not torch.allclose(c2[0, same_column_others], c[0, same_column_others])
    assert torch.equal(c2[0, layout.column[0] != 0], c[0, layout.column[0] != 0])
    assert torch.allclose(m[0, 0], mg[0, same_column_others].sum(0), atol=1e-5)


def test_single_part_context_is_causal(chorale):
    layout, mg, (c, m), (c2, _) = _context_with_one_cell_changed("single", chorale, 1)  # part 0, column 1
    # only part 0's column 2 may change
    moved = (c2 - c).abs().amax(-1)[0] > 0
    assert moved.tolist() == [False, False, True] + [False] * 9
    assert torch.equal(m[0, 1], mg[0, 0]) and not m[0, 0].any()
