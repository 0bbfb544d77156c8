"""The prompt lists a model offers: Period_Composer_Instrumentation combinations, one per line.

Our checkpoints carry the fine-tuning set's prompts in `prompts.txt` beside the weights; the official
fine-tuned NotaGen weights know exactly the 112 combinations of the official demo, shipped in
`assets/official_prompts.txt`. Offering anything else would condition the model on labels it never saw.
"""
from __future__ import annotations

from pathlib import Path

from engine.notagen.generate import Prompt

OFFICIAL_PROMPTS = Path(__file__).resolve().parents[2] / "assets" / "official_prompts.txt"


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a file of `Period_Composer_Instrumentation` lines (anything after a tab is ignored)."""
    prompts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        label = line.split("\t")[0].strip()
        if not label or label.startswith("#"):
            continue
        parts = label.split("_")
        if len(parts) != 3:
            raise ValueError(f"{path}: {label!r} is not Period_Composer_Instrumentation")
        prompts.append(Prompt(*parts))
    return prompts


def prompts_for_checkpoint(checkpoint: str | Path) -> list[Prompt]:
    """The prompts a checkpoint was fine-tuned on: its `prompts.txt`, or the official list for a `.pth`."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        listed = checkpoint / "prompts.txt"
        return read_prompts(listed) if listed.is_file() else []
    return read_prompts(OFFICIAL_PROMPTS)
