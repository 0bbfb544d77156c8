"""Validation loss of several NotaGen models on the same pieces, keys and cuts (the model card's table).

Each model is evaluated by the trainer's own `Trainer.evaluate` (mean next-char NLL over every validation
character), set up as the given stage of a config would be with the model as `--init`; the stage's
`seed` fixes each piece's key and stream cut, so every model sees the same text.

    .venv/bin/python bench/notagen_val_loss.py --config training/configs/notagen_cpu_openscore.json \\
        --data DATA --stage finetune --seed 0 MODEL [MODEL ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.notagen import Trainer, init_distributed, load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--stage", choices=("pretrain", "finetune"), default="finetune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pieces", type=int, default=150, help="the first N validation pieces")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", nargs="+", help="save_pretrained folders, .pt or official .pth")
    args = parser.parse_args()
    dist = init_distributed()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for model in args.models:
            overrides = {"out": out, "seed": args.seed, "threads": args.threads, "max_eval_pieces": args.pieces}
            run = dataclasses.replace(load_config(args.config, args.stage, overrides), data_dir=args.data)
            results[model] = Trainer(run, args.stage, dist, init=model, progress=False).evaluate()
            print(f"{model}: {json.dumps(results[model])}", flush=True)


if __name__ == "__main__":
    main()
