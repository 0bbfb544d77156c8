"""`python -m engine.scoring.reference --data DATA`: saves the reference that `python -m engine evaluate`
uses without a data set (features of DATA's labelled pieces and their labels, see `ReferenceSet.save`).

The features belong to one encoder: rebuild the reference whenever the encoder changes (it keeps the
encoder's digest, and `ReferenceSet.load` refuses another encoder).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import ModelError
from engine.scoring.evaluate import SHIPPED_REFERENCE, ReferenceSet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.scoring.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data set built by `python -m training.data build`")
    parser.add_argument("--encoder", type=Path, default=SHIPPED_REFERENCE, help="music encoder (default: assets/m3)")
    parser.add_argument("--out", type=Path, default=SHIPPED_REFERENCE, help="folder of the reference (default: assets/m3)")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: DATA/features)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args(argv)
    import torch

    from engine.scoring.model import load_encoder

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    try:
        reference = ReferenceSet.build(args.data, load_encoder(args.encoder), cache_dir=args.cache)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    reference.save(args.out)
    size = sum((args.out / name).stat().st_size for name in ("reference.json", "reference.safetensors"))
    print(f"{len(reference.pieces)} pieces, {len(reference.prompts())} prompts with training pieces, encoder "
          f"{reference.digest}: {args.out} ({size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
