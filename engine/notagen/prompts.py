"""The conditioning text: a period/composer/instrumentation `Prompt`, and the prompt lists a model offers.

Our checkpoints carry the fine-tuning set's prompts in `prompts.txt` beside the weights; the official
fine-tuned NotaGen weights know exactly the 112 combinations of the official demo, shipped in
`assets/official_prompts.txt`. Offering anything else would condition the model on labels it never saw.
Torch-free: the web UI and the command line read prompts before (or without) loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OFFICIAL_PROMPTS = Path(__file__).resolve().parents[2] / "assets" / "official_prompts.txt"


@dataclass(frozen=True)
class Prompt:
    """The official conditioning: period, composer and instrumentation, one `%` line each.

    Empty fields are left out (the official demo always sends all three; the released fine-tuned
    weights only know the combinations in the fixtures' `official_prompts.txt`).
    """

    period: str = ""
    composer: str = ""
    instrumentation: str = ""

    @classmethod
    def parse(cls, text: str) -> Prompt:
        """From `"Period|Composer|Instrumentation"` (the command line's form)."""
        parts = [part.strip() for part in text.split("|")]
        if len(parts) > 3:
            raise ValueError(f"a prompt has at most 3 parts (period|composer|instrumentation), not {len(parts)}")
        return cls(*parts)

    @property
    def text(self) -> str:
        return "".join(f"%{field}\n" for field in (self.period, self.composer, self.instrumentation) if field)


PromptLike = Prompt | str | None


def prompt_text(prompt: PromptLike) -> str:
    """The prompt lines: a `Prompt`, raw text (each line kept, a final newline added), or None (unconditional)."""
    if prompt is None:
        return ""
    if isinstance(prompt, Prompt):
        text = prompt.text
    elif isinstance(prompt, str):
        text = "".join(line + "\n" for line in prompt.split("\n") if line)
    else:
        raise TypeError(f"a prompt is a Prompt, a str or None, not {type(prompt).__name__}")
    if any(ord(char) > 127 for char in text):
        raise ValueError("the prompt must be ASCII (NotaGen reads 128 ids)")
    return text


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
