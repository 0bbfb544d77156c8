#!/usr/bin/env bash
# The GPU recipe: on one lent H200 (bf16, 16 cores, no network, one command of at most 10 minutes),
# pre-train and fine-tune NotaGen from a carried pack of the data build, and leave in $OUT the fp16
# model in files of at most 16 MiB and the logs, at most 8 files (what the device tool brings back).
#
#   training/gpu_recipe.sh prepare DATA   here: data/gpu/pack.tar.xz (training.pack) + data/gpu/wheels/
#   training/gpu_recipe.sh train          on the device (run: carry ["data/gpu"]), or a CPU rehearsal:
#   GPU_RECIPE_CONFIG=training/configs/notagen_gpu_rehearsal.json GPU_RECIPE_CARRY=/tmp/carry \
#       GPU_RECIPE_CALIBRATE_STEPS=4 GPU_RECIPE_SHARD_MIB=0.3 OUT=/tmp/out training/gpu_recipe.sh train
#
# $OUT then holds model/ (config.json, model.safetensors.index.json, model-0000k-of-0000N.safetensors,
# prompts.txt: a folder the app and `python -m training.notagen sample-eval --model` load) and
# logs.tar.gz (each stage's metrics.jsonl and run.json, prompts.txt, balance.json, perf.json with
# chars/s and model FLOPs utilisation, this script's output). docs/training.md, "GPU recipe", says more.
set -euo pipefail

CARRY=${GPU_RECIPE_CARRY:-data/gpu}
CONFIG=${GPU_RECIPE_CONFIG:-training/configs/notagen_gpu.json}
WORK=${GPU_RECIPE_WORK:-/tmp/notagen-gpu}
DEADLINE_S=${GPU_RECIPE_DEADLINE_S:-570}       # the whole command, inside the device's 600 s
AFTER_S=${GPU_RECIPE_AFTER_S:-150}             # outside training steps after pre-training: launch, evaluations, export, copy
CALIBRATE_STEPS=${GPU_RECIPE_CALIBRATE_STEPS:-20}
MAX_SHARD_MIB=${GPU_RECIPE_SHARD_MIB:-16}       # the device returns files of at most 16 MiB
PEAK_FLOPS=${GPU_RECIPE_PEAK_FLOPS:-989e12}    # dense bf16, H100/H200 SXM datasheet
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
# What training imports beyond the device's torch image, at the project's pins (requirements.txt); its
# transformers 5 is shadowed by the pinned 4.40 the app runs.
WHEELS="transformers==4.40.0 tokenizers==0.19.1 huggingface_hub==0.36.2 abctoolkit==0.0.6 jellyfish==1.3.0
        rapidfuzz==3.14.6 Unidecode==1.4.0 defusedxml==0.7.1 gmpy2==2.3.2"

prepare() {
    local data=${1:?usage: training/gpu_recipe.sh prepare DATA_DIR}
    nice -n 10 "$PY" -m training.pack --data "$data" --out "$CARRY/pack.tar.xz"
    rm -rf "$CARRY/wheels"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY/wheels" $WHEELS
    du -sh "$CARRY" "$CARRY"/*
}

# setting STAGE KEY: a stage setting of the config file
setting() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' "$CONFIG" "$1" "$2"; }
# minutes SECONDS: as a max_minutes value, at least 0.1
minutes() { "$PY" -c 'import sys; print(round(max(float(sys.argv[1]), 6) / 60, 3))' "$1"; }
left() { echo $((DEADLINE_S - SECONDS)); }

# planned_steps RUN BUDGET_S: the optimiser steps that fit BUDGET_S of training, from the calibration steps' median time
planned_steps() {
    "$PY" - "$1" "$2" <<'EOF'
import json, statistics, sys
records = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
seconds = [r["seconds"] for r in records if r.get("kind") == "train"]
typical = statistics.median(seconds[len(seconds) // 2:])
print(len(seconds) + int(max(float(sys.argv[2]) - sum(seconds), 0) / typical * 0.97))
EOF
}

perf() {
    "$PY" - "$WORK" "$PEAK_FLOPS" <<'EOF'
import json, sys
from pathlib import Path
import torch
from engine.notagen.config import NotagenConfig
from engine.notagen.model import NotagenModel
work, peak = Path(sys.argv[1]), float(sys.argv[2])
out = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "peak_flops": peak,
       "flops_note": "6 N per char (naive) counts every parameter for every char; per char, the patch decoder "
                     "runs once per 16-char patch and the char decoder on 17 positions per patch, so the model's "
                     "matmul FLOPs per char are 6 (patch/16 + char*17/16) (attention scores and embeddings aside)"}
for stage in ("pretrain", "finetune"):
    run = json.loads((work / stage / "run.json").read_text())
    summary = [json.loads(l) for l in open(work / stage / "metrics.jsonl") if '"summary"' in l][-1]
    model = NotagenModel(NotagenConfig.from_dict(run["model"]))
    layers = lambda m: sum(p.numel() for n, p in m.named_parameters() if p.dim() == 2 and ".wpe." not in n and ".wte." not in n)
    patch, char = layers(model.patch_level_decoder), layers(model.char_level_decoder.base.transformer) + 128 * run["model"]["hidden_size"]
    per_char = 6 * (patch / 16 + char * 17 / 16)
    cps = summary["chars_per_s"]
    out[stage] = {"parameters": run["parameters"], "steps": summary["global_step"], "train_seconds": summary["train_seconds"],
                  "chars_seen": summary["chars_seen"], "chars_per_s": cps, "min_eval_loss": summary["min_eval_loss"],
                  "model_flops_per_char": per_char, "mfu": per_char * cps / peak,
                  "mfu_naive_6N": 6 * run["parameters"] * cps / peak}
print(json.dumps(out, indent=1))
EOF
}

train() {
    : "${OUT:?OUT: the folder whose files come back}"
    rm -rf "$WORK"
    mkdir -p "$WORK/data" "$WORK/logs" "$OUT"
    exec > >(tee "$WORK/logs/recipe.log") 2>&1
    echo "gpu_recipe: $CONFIG, deadline ${DEADLINE_S}s, $(date -u +%FT%TZ)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$CARRY"/wheels/*.whl
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -m tarfile -e "$CARRY/pack.tar.xz" "$WORK/data"
    export PYTHONUNBUFFERED=1
    local common=(--config "$CONFIG" --data "$WORK/data" --no-progress)
    local fine_s budget_s steps
    fine_s=$("$PY" -c "print(round(float('$(setting finetune max_minutes)') * 60))")

    # Pre-training: a few steps to time them, then resumed (exactly) with max_steps set so the decay ends in time.
    budget_s=$("$PY" -c "print(min(float('$(setting pretrain max_minutes)') * 60, $(left) - $fine_s - $AFTER_S))")
    echo "== pretrain: ${budget_s}s of training ($(left)s left)"
    "$PY" -m training.notagen pretrain "${common[@]}" --out "$WORK/pretrain" --stop-at-step "$CALIBRATE_STEPS" \
        --set "max_minutes=$(minutes "$budget_s")"
    steps=$(planned_steps "$WORK/pretrain" "$budget_s")
    echo "== pretrain: $steps steps in all"
    "$PY" -m training.notagen pretrain "${common[@]}" --out "$WORK/pretrain" --max-steps "$steps" \
        --set "max_minutes=$(minutes "$budget_s")"

    # Fine-tuning, balanced by prompt, on what time is left.
    budget_s=$("$PY" -c "print(min($fine_s, $(left) - 60))")
    echo "== finetune: ${budget_s}s of training ($(left)s left)"
    "$PY" -m training.notagen finetune "${common[@]}" --out "$WORK/finetune" --init "$WORK/pretrain/final" \
        --set "max_minutes=$(minutes "$budget_s")"

    local best=$WORK/finetune/best.pt
    [[ -e $best ]] || best=$WORK/finetune/last.pt
    "$PY" -m training.notagen export --checkpoint "$best" --out "$OUT/model" --fp16 --max-shard-mib "$MAX_SHARD_MIB"
    perf | tee "$WORK/logs/perf.json"
    for stage in pretrain finetune; do
        mkdir -p "$WORK/logs/$stage"
        cp "$WORK/$stage"/metrics.jsonl "$WORK/$stage"/run*.json "$WORK/logs/$stage/"
    done
    cp "$WORK/finetune/prompts.txt" "$WORK/finetune/balance.json" "$WORK/logs/finetune/"
    echo "gpu_recipe: done in ${SECONDS}s; \$OUT: $(find "$OUT" -type f | wc -l) files, $(du -sh "$OUT" | cut -f1)"
    tar -czf "$OUT/logs.tar.gz" -C "$WORK/logs" .
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    train) train ;;
    *) echo "usage: training/gpu_recipe.sh prepare DATA_DIR | train" >&2; exit 2 ;;
esac
