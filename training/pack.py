"""Pack a data build into one small compressed file, to carry it to a machine that trains (the GPU recipe).

    python -m training.pack --data data --out data/gpu/pack.tar.xz
    python3 -m tarfile -e data/gpu/pack.tar.xz /tmp/pack      # a data folder: --data /tmp/pack

A full build holds every piece in 15 keys with fields training never reads (about 1 GB); the GPU
machine takes at most 64 MiB with the code. The pack is a `tar.xz` of a data folder in the builder's
own format (`pieces/shard-*.jsonl` + `.done`, same shard names), so training reads it unpacked as it is,
with no second reader. It is smaller because

* a record keeps only what `training/notagen_data.py` reads: id, split, prompt, labels, original_key, keys;
* a labelled piece keeps the keys fine-tuning can draw for it (the original key +-3 semitones,
  `finetune_key_distribution`), which pre-training then draws from as well; any other piece keeps
  `pretrain_keys` keys drawn at random (seeded by its id, so a pack is reproducible);
* only complete shards (with a `.done` marker) are read: a build still writing its last shard can be packed.

`pack.json` in the archive records the source, the options and the counts.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import tarfile
import time
from pathlib import Path

from training.notagen_data import complete_shards, finetune_key_distribution, key_signature

#: The record fields training reads (the index and `piece_text`).
FIELDS = ("id", "split", "prompt", "labels", "original_key", "keys")
MANIFEST = "pack.json"


def kept_keys(record: dict, pretrain_keys: int, seed: int = 0) -> list[str]:
    """The key names a record keeps in the pack (see the module docstring), in the record's order."""
    available = list(record["keys"])
    near = set()
    if record.get("prompt") and key_signature(record.get("original_key")) is not None:
        near = set(finetune_key_distribution(record["original_key"])) & set(available)
    if near:
        return [key for key in available if key in near]
    chosen = set(random.Random(f"pack/{seed}/{record['id']}").sample(available, min(pretrain_keys, len(available))))
    return [key for key in available if key in chosen]


def slim(record: dict, pretrain_keys: int, seed: int = 0) -> dict:
    """The record as the pack stores it: the fields training reads, the kept keys."""
    out = {field: record.get(field) for field in FIELDS}
    out["keys"] = {key: record["keys"][key] for key in kept_keys(record, pretrain_keys, seed)}
    return out


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))  # mtime 0: the same input gives the same archive


def pack(data_dir: str | Path, out: str | Path, pretrain_keys: int = 3, names: list[str] | None = None,
         seed: int = 0, preset: int = 6, log=print) -> dict:
    """Write the pack of the complete shards of `data_dir` (only those `names`, if given) to `out`; returns the manifest."""
    shards = [shard for shard in complete_shards(data_dir) if names is None or shard["name"] in names]
    if not shards or (names is not None and len(shards) != len(set(names))):
        raise SystemExit(f"not every shard asked for is complete in {Path(data_dir) / 'pieces'}: {names or 'none complete'}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    counts = {"pieces": 0, "labelled": 0, "keys": 0, "bytes_in": 0, "bytes_packed_text": 0}
    started = time.perf_counter()
    with tarfile.open(tmp, "w:xz", preset=preset) as archive:
        for number, shard in enumerate(shards, 1):
            lines = []
            with open(Path(data_dir) / "pieces" / shard["name"], "rb") as handle:
                for line in handle:
                    record = slim(json.loads(line), pretrain_keys, seed)
                    lines.append(json.dumps(record, ensure_ascii=False) + "\n")
                    counts["pieces"] += 1
                    counts["labelled"] += bool(record["prompt"])
                    counts["keys"] += len(record["keys"])
            data = "".join(lines).encode("utf-8")
            counts["bytes_in"] += shard["bytes"]
            counts["bytes_packed_text"] += len(data)
            _add(archive, f"pieces/{shard['name']}", data)
            _add(archive, f"pieces/{Path(shard['name']).with_suffix('.done')}",
                 json.dumps({"pieces": len(lines), "packed_from": shard}).encode())
            log(f"  {number}/{len(shards)} {shard['name']}: {len(lines)} pieces, "
                f"{shard['bytes'] / 2**20:.1f} -> {len(data) / 2**20:.1f} MiB of text")
        manifest = {"source": str(Path(data_dir).resolve()), "shards": [s["name"] for s in shards],
                    "pretrain_keys": pretrain_keys, "seed": seed, "xz_preset": preset, **counts}
        _add(archive, MANIFEST, json.dumps(manifest, indent=1).encode())
    tmp.replace(out)
    manifest["bytes_out"] = out.stat().st_size
    log(f"wrote {out}: {counts['pieces']} pieces ({counts['labelled']} labelled, {counts['keys'] / counts['pieces']:.1f} keys "
        f"each), {counts['bytes_in'] / 2**20:.0f} MiB -> {manifest['bytes_out'] / 2**20:.1f} MiB "
        f"in {time.perf_counter() - started:.0f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a data build (the folder holding pieces/)")
    parser.add_argument("--out", required=True, help="the pack to write (.tar.xz)")
    parser.add_argument("--pretrain-keys", type=int, default=3, help="keys kept per unlabelled piece (default 3)")
    parser.add_argument("--shards", nargs="+", metavar="NAME",
                        help="pack only these complete shards (shard-00005.jsonl ...: a small rehearsal pack)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", type=int, default=6, help="xz preset 0-9 (default 6)")
    args = parser.parse_args(argv)
    pack(args.data, args.out, args.pretrain_keys, args.shards, args.seed, args.preset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
