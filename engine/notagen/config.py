"""NotaGen model sizes: the released presets, JSON round-trip, and inference from checkpoint tensors.

Official checkpoints are bare state dicts (the official code keeps the sizes in a separate `config.py`),
so loading one needs `infer_from_state_dict`. Every size except the attention head count is visible in
the tensor shapes; the official code always uses `HIDDEN_SIZE // 64` heads, which is the default here.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Width of the character one-hot and of the char decoder vocabulary (ASCII), fixed by the official code.
CHAR_VOCAB_SIZE = 128
#: The official code gives every released size `hidden_size // HEAD_DIM` attention heads.
HEAD_DIM = 64


@dataclass(frozen=True)
class NotagenConfig:
    """The sizes that define a NotaGen model (the official `config.py` values, lower-cased).

    `patch_length` is the patch-level context (positions of the patch decoder). `num_heads=None` means
    the official rule `hidden_size // 64`.
    """

    patch_size: int = 16
    patch_length: int = 2048
    patch_num_layers: int = 12
    char_num_layers: int = 3
    hidden_size: int = 768
    num_heads: int | None = None

    def __post_init__(self) -> None:
        if self.num_heads is None:
            object.__setattr__(self, "num_heads", self.hidden_size // HEAD_DIM)
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible into {self.num_heads} attention heads; "
                "pass num_heads explicitly"
            )

    @classmethod
    def preset(cls, name: str) -> NotagenConfig:
        """A built-in size by name (see `PRESETS`), case-insensitive."""
        try:
            return PRESETS[name.lower()]
        except KeyError:
            raise KeyError(f"unknown NotaGen preset {name!r}; known: {', '.join(PRESETS)}") from None

    @classmethod
    def from_official_values(cls, values: Mapping[str, object]) -> NotagenConfig:
        """From the official upper-case `config.py` names (PATCH_SIZE, PATCH_LENGTH, ...); others are ignored."""
        return cls(**{field.name: values[field.name.upper()] for field in _size_fields() if field.name.upper() in values})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> NotagenConfig:
        """Inverse of `to_dict`; an unknown key is an error so a misspelt size never passes silently."""
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown NotagenConfig keys: {sorted(unknown)}")
        return cls(**values)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load_json(cls, path: str | Path) -> NotagenConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _size_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(field for field in dataclasses.fields(NotagenConfig) if field.name != "num_heads")


# Released sizes. The paper (IJCAI 2025 text) states only the large one: 20 patch layers, 6 char layers,
# hidden 1280, context 1024, 516M parameters; the official repository's `config.py` for finetune/inference
# holds the same values. The small and medium rows come from the official README's model table
# (small 110M, medium 244M, both with context 2048), not from the paper. The fixtures' README confirms
# small = 12/3/768/2048 (the official pretrain `config.py`). Medium is the one size no file here confirms.
# NotaGen-X (the released fine-tuned + RL model) has the large architecture.
_LARGE = NotagenConfig(patch_length=1024, patch_num_layers=20, char_num_layers=6, hidden_size=1280)
PRESETS: dict[str, NotagenConfig] = {
    "notagen-small": NotagenConfig(patch_length=2048, patch_num_layers=12, char_num_layers=3, hidden_size=768),
    "notagen-medium": NotagenConfig(patch_length=2048, patch_num_layers=16, char_num_layers=3, hidden_size=1024),
    "notagen-large": _LARGE,
    "notagen-x": _LARGE,
    # The tiny models of the reference fixtures (shared/fixtures/notagen_reference, README section A).
    "tiny": NotagenConfig(patch_length=64, patch_num_layers=2, char_num_layers=1, hidden_size=128),
    "tiny-trained": NotagenConfig(patch_length=64, patch_num_layers=2, char_num_layers=1, hidden_size=64),
}

_PATCH_EMBEDDING = "patch_level_decoder.patch_embedding.weight"
_PATCH_WPE = "patch_level_decoder.base.wpe.weight"
_CHAR_WPE = "char_level_decoder.base.transformer.wpe.weight"
_PATCH_LAYER = re.compile(r"^patch_level_decoder\.base\.h\.(\d+)\.")
_CHAR_LAYER = re.compile(r"^char_level_decoder\.base\.transformer\.h\.(\d+)\.")


def infer_from_state_dict(state_dict: Mapping[str, object], num_heads: int | None = None) -> NotagenConfig:
    """Derive the config from the tensor shapes of an official (or our) NotaGen state dict.

    Heads cannot be read from shapes: `num_heads=None` takes the official `hidden_size // 64`.
    """
    missing = [key for key in (_PATCH_EMBEDDING, _PATCH_WPE, _CHAR_WPE) if key not in state_dict]
    if missing:
        raise ValueError(f"not a NotaGen state dict: missing {', '.join(missing)}")
    hidden_size, flat_width = state_dict[_PATCH_EMBEDDING].shape
    if flat_width % CHAR_VOCAB_SIZE:
        raise ValueError(f"patch embedding input width {flat_width} is not a multiple of {CHAR_VOCAB_SIZE}")
    patch_size = flat_width // CHAR_VOCAB_SIZE
    char_positions = state_dict[_CHAR_WPE].shape[0]
    if char_positions != patch_size + 1:
        raise ValueError(f"char decoder has {char_positions} positions, expected patch_size + 1 = {patch_size + 1}")
    return NotagenConfig(
        patch_size=patch_size,
        patch_length=state_dict[_PATCH_WPE].shape[0],
        patch_num_layers=_count_layers(state_dict, _PATCH_LAYER),
        char_num_layers=_count_layers(state_dict, _CHAR_LAYER),
        hidden_size=hidden_size,
        num_heads=num_heads,
    )


def _count_layers(state_dict: Mapping[str, object], pattern: re.Pattern[str]) -> int:
    indices = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    if indices != set(range(len(indices))):
        raise ValueError(f"layer indices are not contiguous from 0: {sorted(indices)}")
    return len(indices)
