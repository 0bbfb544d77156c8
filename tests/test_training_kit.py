"""training.kit: `--set` overrides, the learning-rate schedule, exact resumption from `last.pt`."""
import argparse
import json
import math
import random

import pytest
import torch

from tests.test_evaluate import data_dir  # noqa: F401 - the small built data set
from training import kit, m3

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]


def test_set_values_are_json_or_bare_words():
    assert kit.parse_setting("steps=300") == ("steps", 300)
    assert kit.parse_setting("position_signal=false") == ("position_signal", False)
    assert kit.parse_setting("betas=[0.9, 0.95]") == ("betas", [0.9, 0.95])
    assert kit.parse_setting("name=my_run") == ("name", "my_run")
    assert kit.parse_setting("out=runs/a=b") == ("out", "runs/a=b")
    for bad in ("steps", "=3"):
        with pytest.raises(argparse.ArgumentTypeError):
            kit.parse_setting(bad)
    parser = argparse.ArgumentParser()
    kit.add_set_option(parser, "--set steps=3")
    assert dict(parser.parse_args(["--set", "steps=3", "--set", "lr=1e-3"]).set) == {"steps": 3, "lr": 1e-3}


def test_overrides_go_to_the_section_that_knows_them(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"name": "x", "model": {"hidden_size": 64}, "train": {"steps": 10}}))
    raw = kit.read_config(path, {"train": ["steps", "lr"], "model": ["hidden_size", "layers"]},
                          {"lr": 0.5, "layers": 3, "steps": 20})
    assert raw == {"name": "x", "model": {"hidden_size": 64, "layers": 3}, "train": {"steps": 20, "lr": 0.5}}
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        kit.read_config(path, {"train": ["steps"]}, {"nope": 1})


def test_schedule_warm_up_middle_and_end():
    # 10 warm-up steps, decay over steps 10..110
    assert kit.lr_factor(0, 10, 110) == pytest.approx(0.1)
    assert kit.lr_factor(4, 10, 110) == pytest.approx(0.5)
    assert kit.lr_factor(9, 10, 110) == 1.0
    assert kit.lr_factor(10, 10, 110) == 1.0
    assert kit.lr_factor(60, 10, 110) == pytest.approx(0.5)
    assert kit.lr_factor(60, 10, 110, floor=0.1) == pytest.approx(0.55)
    assert kit.lr_factor(110, 10, 110, floor=0.1) == pytest.approx(0.1)
    assert kit.lr_factor(500, 10, 110, floor=0.1) == pytest.approx(0.1)  # past the horizon: the floor
    assert kit.lr_factor(35, 10, 110, "linear") == pytest.approx(0.75)
    assert kit.lr_factor(110, 10, 110, "linear") == 0.0
    assert kit.lr_factor(10**6, 10, 110, "constant") == 1.0
    assert kit.lr_factor(3, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))  # no warm-up
    with pytest.raises(ValueError, match="unknown schedule"):
        kit.lr_factor(0, 10, 110, "exponential")


def test_scheduler_follows_lr_factor_and_resumes():
    weights = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weights], lr=2.0)
    scheduler = kit.scheduler(optimizer, 3, 8, floor=0.1)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict(), optimizer.state_dict()
    optimizer2 = torch.optim.SGD([weights], lr=2.0)
    scheduler2 = kit.scheduler(optimizer2, 3, 8, floor=0.1)
    optimizer2.load_state_dict(state[1])
    scheduler2.load_state_dict(state[0])
    for _ in range(4):
        seen.append(optimizer2.param_groups[0]["lr"])
        optimizer2.step()
        scheduler2.step()
    assert seen == pytest.approx([2.0 * kit.lr_factor(step, 3, 8, floor=0.1) for step in range(8)])


def test_checkpoint_with_rng_states_loads_weights_only(tmp_path):
    kit.seed_everything(5)
    own = random.Random(7)
    kit.save_checkpoint(tmp_path / kit.LAST, {"global_rng": kit.rng_state(), "rng": kit.python_rng_state(own), "step": 3})
    expected = (random.random(), torch.rand(3), own.random())
    state = torch.load(tmp_path / kit.LAST, weights_only=True)  # raises on anything but tensors and plain types
    kit.set_rng_state(state["global_rng"])
    kit.set_python_rng_state(state["rng"], own)
    assert (random.random(), own.random()) == (expected[0], expected[2])
    assert torch.equal(torch.rand(3), expected[1])
    assert kit.load_checkpoint(tmp_path / "none.pt") is None
    assert not (tmp_path / "last.tmp").exists()


def test_budget_counts_earlier_segments():
    assert not kit.Budget(None, spent=1e9).exhausted
    budget = kit.Budget(1.0, spent=50.0)
    assert not budget.exhausted
    budget.add(10.0)
    assert budget.exhausted


def test_m3_stopped_and_resumed_equals_one_run(data_dir, tmp_path):  # noqa: F811
    """M3 training stopped by its time budget after step 1 and rerun ends with the weights, optimiser
    state and learning rate of an uninterrupted run, bit for bit (the scheduler, the data RNG and the
    dropout RNG all resume)."""
    config = {"model": {"patch_length": 32, "patch_num_layers": 1, "token_num_layers": 1, "hidden_size": 64},
              "train": {"name": "whole", "steps": 4, "batch_size": 2, "eval_every": 2, "eval_pieces": 4, "warmup": 2,
                        "checkpoint_every": 100}}
    path = tmp_path / "m3.json"
    path.write_text(json.dumps(config))
    whole = kit.load_checkpoint(m3.train(path, data_dir, tmp_path) / kit.LAST)
    stopped = m3.train(path, data_dir, tmp_path, {"name": "split", "max_minutes": 1e-9})
    assert kit.load_checkpoint(stopped / kit.LAST)["step"] == 1
    split = kit.load_checkpoint(m3.train(path, data_dir, tmp_path, {"name": "split"}) / kit.LAST)
    assert split["step"] == whole["step"] == 4
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert split["lr_sched"] == whole["lr_sched"]
    assert torch.equal(split["global_rng"]["torch"], whole["global_rng"]["torch"])
    moments = [s["exp_avg"] for s in whole["optimizer"]["state"].values()]
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, split["optimizer"]["state"].values()))
