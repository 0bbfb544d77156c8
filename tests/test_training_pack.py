"""The GPU recipe's two ends: the pack of a data build (a data folder again once unpacked) and the model
it sends back (fp16 weights in files of at most 16 MiB, which the app loads), the config's size, and the
whole recipe rehearsed on the CPU with a tiny config (it runs blind on a lent device, once)."""
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from engine.notagen.config import NotagenConfig
from engine.notagen.generate import NotagenGenerator
from engine.notagen.model import INDEX_FILE, WEIGHTS_FILE, NotagenModel, load_checkpoint
from engine.score.notagen_abc import KEYS
from training import notagen, pack
from training.notagen_data import NotagenDataset, build_index, complete_shards, finetune_key_distribution, select

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Baroque_Bach, Johann Sebastian_Choral"
LABELS = {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}


def _record(number: int, split: str, labelled: bool, original_key: str | None) -> dict:
    return {"id": f"test/piece#{number}", "source": "test", "title": "t", "work": f"test/w{number}", "split": split,
            "labels": LABELS if labelled else None, "prompt": PROMPT if labelled else None,
            "original_key": original_key, "interleaved": "unused",
            "keys": {key: f"L:1/8\nM:4/4\nK:{key}\nV:1 treble\n[V:1]CDEF GABc|\n[V:1]c4 C4|]\n" for key in KEYS},
            "bars": 2, "misaligned_bars": 0}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A data build with two complete shards and one the builder is still writing."""
    folder = tmp_path_factory.mktemp("build")
    (folder / "pieces").mkdir()
    layout = [[("train", True, "G"), ("train", True, "F#min"), ("train", False, "C"), ("validation", True, "Eb")],
              [("train", False, None), ("train", True, None), ("validation", False, "D")]]
    number = 0
    for shard, records in enumerate(layout):
        lines = []
        for split, labelled, key in records:
            lines.append(json.dumps(_record(number, split, labelled, key)) + "\n")
            number += 1
        (folder / "pieces" / f"shard-{shard:05d}.jsonl").write_text("".join(lines), encoding="utf-8")
        (folder / "pieces" / f"shard-{shard:05d}.done").write_text("{}", encoding="utf-8")
    (folder / "pieces" / "shard-00002.jsonl.tmp").write_text("half a line", encoding="utf-8")
    return folder


def test_pack_unpacks_to_a_smaller_data_folder_training_reads(build, tmp_path):
    manifest = pack.pack(build, tmp_path / "pack.tar.xz", pretrain_keys=3, log=lambda _: None)
    assert manifest["shards"] == ["shard-00000.jsonl", "shard-00001.jsonl"] and manifest["pieces"] == 7
    assert manifest["bytes_out"] < manifest["bytes_in"] / 4
    pack.pack(build, tmp_path / "again.tar.xz", pretrain_keys=3, log=lambda _: None)
    assert (tmp_path / "pack.tar.xz").read_bytes() == (tmp_path / "again.tar.xz").read_bytes()

    with tarfile.open(tmp_path / "pack.tar.xz") as archive:
        archive.extractall(tmp_path / "data", filter="data")
    data = tmp_path / "data"
    assert [shard["name"] for shard in complete_shards(data)] == manifest["shards"]
    records = [json.loads(line) for path in sorted((data / "pieces").glob("*.jsonl")) for line in path.open()]
    originals = {json.loads(line)["id"]: json.loads(line) for path in sorted((build / "pieces").glob("*.jsonl"))
                 for line in path.open()}
    for record in records:
        original = originals[record["id"]]
        assert set(record) == set(pack.FIELDS)
        assert all(record["keys"][key] == original["keys"][key] for key in record["keys"])
        if record["prompt"] and record["original_key"]:  # every key fine-tuning may draw, and only those
            assert set(record["keys"]) == set(finetune_key_distribution(record["original_key"]))
        else:
            assert len(record["keys"]) == 3
    assert len(next(r for r in records if r["original_key"] == "F#min")["keys"]) == 9  # A +-3, two names for 3 classes

    entries = build_index(data, complete_shards(data))
    for stage, pieces in (("pretrain", 5), ("finetune", 3)):
        chosen = select(entries, stage, "train")
        assert len(chosen) == pieces
        dataset = NotagenDataset(data, chosen, stage, patch_length=16)
        assert all(dataset[i].shape[1] == 16 for i in range(len(dataset)))


def test_pack_refuses_a_shard_that_is_not_complete(build, tmp_path):
    with pytest.raises(SystemExit, match="shard-00002"):
        pack.pack(build, tmp_path / "p.tar.xz", names=["shard-00000.jsonl", "shard-00002.jsonl"], log=lambda _: None)
    small = pack.pack(build, tmp_path / "p.tar.xz", names=["shard-00001.jsonl"], log=lambda _: None)
    assert small["shards"] == ["shard-00001.jsonl"] and small["pieces"] == 3


def test_sharded_fp16_export_loads_in_the_app(tmp_path):
    torch.manual_seed(0)
    model = NotagenModel(NotagenConfig(patch_length=32, patch_num_layers=2, char_num_layers=1, hidden_size=64, num_heads=2))
    model.save_pretrained(tmp_path / "single")
    limit = 270_000  # the largest tensor, the patch embedding, is 262 KB
    model.half().save_pretrained(tmp_path / "sharded", max_shard_bytes=limit)
    model.float()
    files = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(files) >= 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert all((tmp_path / "sharded" / name).stat().st_size <= limit for name in files)
    index = json.loads((tmp_path / "sharded" / INDEX_FILE).read_text())
    assert sorted(set(index["weight_map"].values())) == files
    assert "char_level_decoder.base.lm_head.weight" not in index["weight_map"]  # tied: stored once

    loaded, _ = load_checkpoint(tmp_path / "sharded")
    for (name, value), (other_name, other) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == other_name and other.dtype == torch.float32
        assert torch.equal(value.half().float(), other), name
    assert loaded.char_level_decoder.base.lm_head.weight is loaded.char_level_decoder.base.transformer.wte.weight
    assert NotagenGenerator.load(tmp_path / "sharded").model.config == model.config

    # Saving again in one file (or sharded in a folder that held one file) leaves no stale weights behind.
    model.save_pretrained(tmp_path / "sharded")
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["config.json", WEIGHTS_FILE]
    model.save_pretrained(tmp_path / "single", max_shard_bytes=2 * limit)  # float32
    assert not (tmp_path / "single" / WEIGHTS_FILE).exists()

    model.save_pretrained(tmp_path / "broken", max_shard_bytes=2 * limit)
    max((tmp_path / "broken").glob("model-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError):
        NotagenModel.from_pretrained(tmp_path / "broken")


def test_gpu_config_fits_what_the_device_sends_back():
    """20-40 M parameters whose fp16 files (16 MiB each) and the logs archive stay within 8 files and 64 MiB."""
    run = notagen.load_config("training/configs/notagen_gpu.json", "pretrain")
    parameters = sum(p.numel() for p in NotagenModel(run.model).parameters())
    assert 20e6 <= parameters <= 40e6
    stored = 2 * (parameters - run.model.hidden_size * 128)  # fp16, the tied lm_head once
    shards = -(-stored // (16 * 2**20 - 64 * 1024))
    assert shards + 4 <= 8  # + config.json, the index, prompts.txt, logs.tar.gz
    assert stored < 60 * 2**20
    finetune = notagen.load_config("training/configs/notagen_gpu.json", "finetune").stage
    assert finetune.balance and run.stage.bf16 and run.stage.max_minutes + finetune.max_minutes <= 8.5


@pytest.mark.timeout(300)
def test_the_recipe_rehearsed_on_the_cpu_sends_back_what_the_device_returns(tmp_path):
    """`training/gpu_recipe.sh train` as the device runs it (pack carried, deadline, calibration, resumed
    pre-training, balanced fine-tuning, sharded fp16 export, logs), on a tiny config: at most 8 files in
    $OUT, none over the shard limit, a model the app loads, and chars/s and MFU for both stages."""
    folder = tmp_path / "build" / "pieces"
    folder.mkdir(parents=True)
    records = [_record(n, "validation" if n % 6 == 5 else "train", n % 3 != 2, "CDEFGAB"[n % 7]) for n in range(30)]
    (folder / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "shard-00000.done").write_text("{}", encoding="utf-8")
    pack.pack(folder.parent, tmp_path / "carry" / "pack.tar.xz", log=lambda _: None)
    out, limit_mib = tmp_path / "out", 0.3
    env = {**os.environ, "GPU_RECIPE_CONFIG": "training/configs/notagen_gpu_rehearsal.json", "GPU_RECIPE_CARRY": str(tmp_path / "carry"),
           "GPU_RECIPE_WORK": str(tmp_path / "work"), "GPU_RECIPE_CALIBRATE_STEPS": "4", "GPU_RECIPE_SHARD_MIB": str(limit_mib),
           "OUT": str(out), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "training/gpu_recipe.sh", "train"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    files = [path for path in out.rglob("*") if path.is_file()]
    assert len(files) <= 8 and all(path.stat().st_size <= limit_mib * 2**20 for path in files), files
    assert len(list((out / "model").glob("model-*.safetensors"))) >= 2  # sharded at the limit
    generator = NotagenGenerator.load(out / "model")
    assert generator.model.config.hidden_size == 64
    with tarfile.open(out / "logs.tar.gz") as archive:
        names = archive.getnames()
        perf = json.load(io.TextIOWrapper(archive.extractfile("./perf.json")))
    assert {"./recipe.log", "./pretrain/metrics.jsonl", "./finetune/metrics.jsonl", "./finetune/balance.json"} <= set(names)
    for stage in ("pretrain", "finetune"):
        assert perf[stage]["chars_per_s"] > 0 and 0 < perf[stage]["mfu"] < 1 and perf[stage]["steps"] > 4
