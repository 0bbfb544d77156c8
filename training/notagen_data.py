"""NotaGen training data: a lazy index over the data builder's shards, key choice, and encoding.

The data builder (`training/data.py`, `docs/datasets.md`) writes `data/pieces/shard-*.jsonl`, one
piece per line with its rest-reduced interleaved text in each of NotaGen's 15 keys. Only complete
shards (those with a `.done` marker) are used. The index keeps, per piece, the shard, the byte offset
of its line and a few small fields; a piece's text is read from disk when it is needed, so memory holds
the index and the pieces in flight, never the corpus.

Key choice, per piece and epoch (the NotaGen paper, section 3.2 and 4.1):

* pre-training: one of the piece's keys, uniformly (all 15 for a full build);
* fine-tuning: a transposition of the original key by -3..+3 semitones with probabilities
  1/16, 2/16, 3/16, 4/16, 3/16, 2/16, 1/16 (the original key 4/16 = 0.25, +-1 3/16 each, +-2 2/16 each,
  +-3 1/16 each: "the six nearest key transpositions ... with decreasing probability"). This is the
  distribution of the official fine-tuning loader. A pitch class with two names is written
  Db (0.8) / C# (0.2), B (0.8) / Cb (0.2), F# (0.5) / Gb (0.5), also as the official loader does.
  A mode (`F#min`) is first mapped to its key signature (`A`) with abctoolkit's `Mode2Key`.

Every random choice for a piece comes from its own `random.Random` seeded by (seed, epoch, piece),
so an item does not depend on which process or worker reads it or when: resuming mid-epoch and
running on N GPUs give the same pieces in the same keys with the same stream cuts.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from engine.notagen.patchilizer import Patchilizer
from engine.score.notagen_abc import KEYS, Key2index, Mode2Key

Stage = Literal["pretrain", "finetune"]

#: Fine-tuning transposition offsets (semitones) and their probabilities (x 1/16).
FINETUNE_OFFSETS: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)
FINETUNE_WEIGHTS: tuple[int, ...] = (1, 2, 3, 4, 3, 2, 1)
#: Names of the pitch classes that have two key names among NotaGen's 15, with the first name's probability.
ENHARMONIC_CHOICE: dict[int, tuple[str, str, float]] = {1: ("Db", "C#", 0.8), 11: ("B", "Cb", 0.8), 6: ("F#", "Gb", 0.5)}
_KEY_OF_INDEX: dict[int, str] = {index: key for key, index in Key2index.items() if index not in ENHARMONIC_CHOICE}


def key_signature(original_key: str | None) -> str | None:
    """The NotaGen key name of a piece's `original_key` (a key or a mode such as `F#min`), or None."""
    if not original_key:
        return None
    if original_key in Key2index:
        return original_key
    return Mode2Key.get(original_key)


def pitch_class_key(index: int, rng: random.Random) -> str:
    """A key name for pitch class `index`; the enharmonic pairs are drawn as the official loader does."""
    index %= 12
    if index in ENHARMONIC_CHOICE:
        first, second, p_first = ENHARMONIC_CHOICE[index]
        return first if rng.random() < p_first else second
    return _KEY_OF_INDEX[index]


def finetune_key(original_key: str | None, available: tuple[str, ...], rng: random.Random) -> str:
    """The fine-tuning key of a piece: near its original key (see the module docstring).

    Falls back to a uniform choice among `available` when the original key is unknown or the drawn key
    was not built (a build with `--keys`).
    """
    tonic = key_signature(original_key)
    if tonic is None:
        return rng.choice(available)
    offset = rng.choices(FINETUNE_OFFSETS, weights=FINETUNE_WEIGHTS)[0]
    key = pitch_class_key(Key2index[tonic] + offset, rng)
    return key if key in available else rng.choice(available)


def finetune_key_distribution(original_key: str) -> dict[str, float]:
    """The exact probability of each key for a piece in `original_key` (documentation and tests)."""
    tonic = key_signature(original_key)
    out: dict[str, float] = {}
    for offset, weight in zip(FINETUNE_OFFSETS, FINETUNE_WEIGHTS):
        index = (Key2index[tonic] + offset) % 12
        p = weight / sum(FINETUNE_WEIGHTS)
        if index in ENHARMONIC_CHOICE:
            first, second, p_first = ENHARMONIC_CHOICE[index]
            out[first] = out.get(first, 0.0) + p * p_first
            out[second] = out.get(second, 0.0) + p * (1 - p_first)
        else:
            out[_KEY_OF_INDEX[index]] = out.get(_KEY_OF_INDEX[index], 0.0) + p
    return out


def piece_text(record: dict, stage: Stage, rng: random.Random) -> str:
    """The training text of a piece record for one epoch: a random key (pre-training), or the prompt
    lines and a key near the original (fine-tuning)."""
    keys = record["keys"]
    available = tuple(key for key in KEYS if key in keys) or tuple(sorted(keys))
    if stage == "pretrain":
        return keys[rng.choice(available)]
    labels = record["labels"]
    key = finetune_key(record.get("original_key"), available, rng)
    return f"%{labels['period']}\n%{labels['composer']}\n%{labels['instrumentation']}\n" + keys[key]


# ---------------------------------------------------------------------------------------------
# index
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    shard: str
    """The shard file name under `<data>/pieces/`."""
    offset: int
    """Byte offset of the piece's line in the shard."""
    id: str
    split: str
    prompt: str | None


def complete_shards(data_dir: str | Path) -> list[dict]:
    """The complete `pieces` shards (with a `.done` marker): name and size, sorted by name."""
    folder = Path(data_dir) / "pieces"
    shards = []
    for path in sorted(folder.glob("shard-*.jsonl")):
        if path.with_suffix(".done").exists():
            shards.append({"name": path.name, "bytes": path.stat().st_size})
    return shards


def build_index(data_dir: str | Path, shards: list[dict]) -> list[IndexEntry]:
    """Scan the given shards once (one line in memory at a time) and index their pieces.

    `shards` pins the data set of a run: a resumed run reuses the list it started with, so shards the
    data builder adds meanwhile do not change the order of an epoch in progress.
    """
    folder = Path(data_dir) / "pieces"
    entries = []
    for shard in shards:
        path = folder / shard["name"]
        size = path.stat().st_size
        if size != shard["bytes"]:
            raise RuntimeError(f"{path} changed since the run started ({shard['bytes']} -> {size} bytes)")
        with open(path, "rb") as handle:
            offset = 0
            for line in handle:
                record = json.loads(line)
                entries.append(IndexEntry(shard["name"], offset, record["id"], record["split"], record.get("prompt")))
                offset += len(line)
    return entries


def select(entries: list[IndexEntry], stage: Stage, split: str, max_pieces: int | None = None) -> list[IndexEntry]:
    """The pieces of one split for a stage (fine-tuning: only labelled pieces), in index order."""
    chosen = [entry for entry in entries if entry.split == split and (stage == "pretrain" or entry.prompt)]
    return chosen[:max_pieces] if max_pieces else chosen


class ShardReader:
    """Reads single piece records by (shard, offset), keeping a few files open."""

    def __init__(self, data_dir: str | Path, max_open: int = 4) -> None:
        self.folder = Path(data_dir) / "pieces"
        self.max_open = max_open
        self._handles: dict[str, object] = {}

    def read(self, entry: IndexEntry) -> dict:
        handle = self._handles.get(entry.shard)
        if handle is None:
            if len(self._handles) >= self.max_open:
                self._handles.pop(next(iter(self._handles))).close()
            handle = self._handles[entry.shard] = open(self.folder / entry.shard, "rb")
        handle.seek(entry.offset)
        return json.loads(handle.readline())

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __getstate__(self) -> dict:  # DataLoader workers get their own handles
        return {"folder": self.folder, "max_open": self.max_open, "_handles": {}}


class NotagenDataset(torch.utils.data.Dataset):
    """Pieces of one stage and split, encoded as NotaGen training patches.

    Item i of epoch e is a deterministic function of (seed, e, i): key choice and stream cut use a
    private `random.Random`. Call `set_epoch` before each epoch (before creating the loader's iterator).
    """

    def __init__(self, data_dir: str | Path, entries: list[IndexEntry], stage: Stage, patch_length: int,
                 patch_size: int = 16, seed: int = 0) -> None:
        self.entries = entries
        self.stage = stage
        self.patch_length = patch_length
        self.patchilizer = Patchilizer(patch_size)
        self.seed = seed
        self.epoch = 0
        self.reader = ShardReader(data_dir)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def rng(self, index: int) -> random.Random:
        return random.Random(f"notagen/{self.stage}/{self.seed}/{self.epoch}/{index}")

    def text(self, index: int) -> str:
        record = self.reader.read(self.entries[index])
        return piece_text(record, self.stage, self.rng(index))

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self.rng(index)
        record = self.reader.read(self.entries[index])
        text = piece_text(record, self.stage, rng)
        patches = self.patchilizer.encode_train(
            text, self.patch_length, rng=rng, body_start="pretrain" if self.stage == "pretrain" else "finetune"
        )
        return torch.tensor(patches, dtype=torch.long)


def collate(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of [n_i, 16] patch tensors to [B, max n, 16]; masks [B, max n] mark real patches."""
    patches = torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=0)
    masks = torch.zeros(patches.shape[:2], dtype=torch.long)
    for row, item in enumerate(items):
        masks[row, : item.shape[0]] = 1
    return patches, masks


def target_chars(patches: torch.Tensor, masks: torch.Tensor) -> int:
    """Number of chars the loss is averaged over: the non-pad ids of every real patch after the first."""
    return int(((patches[:, 1:] != 0) & (masks[:, 1:, None] == 1)).sum())
