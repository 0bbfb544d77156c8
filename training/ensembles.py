"""The ensembles table the app offers per prompt: the most common real headers of the fine-tuning pieces.

    python -m training.ensembles --data DIR --out assets/notagen/ensembles.json

reads a `training.data` build (DIR/pieces/*.jsonl, finished shards only), takes each labelled piece's
header (`engine.notagen.header.read_header`: its parts, clefs and names) and keeps, per prompt and per
instrumentation, the ensembles of at least `--min-pieces` pieces, most common first. Headers with several
voices on one staff are left out (an app-written header has one voice per staff).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.notagen.header import Ensemble, read_header

TOP = 6
"""Ensembles kept per prompt and per instrumentation."""


def labelled_headers(data: Path) -> Iterator[tuple[str, Ensemble]]:
    """(prompt, ensemble) of every labelled piece whose header gives an ensemble."""
    for shard in sorted((data / "pieces").glob("*.jsonl")):
        with shard.open(encoding="utf-8") as handle:
            for line in handle:
                piece = json.loads(line)
                if piece.get("prompt"):
                    ensemble = read_header(piece["interleaved"]).ensemble
                    if ensemble is not None:
                        yield piece["prompt"], ensemble


def ensemble_table(headers: Iterable[tuple[str, Ensemble]], min_pieces: int = 2, top: int = TOP) -> dict:
    """The JSON table: `prompts` and `instrumentations`, each a list of ensembles with their piece counts."""
    by_prompt: dict[str, Counter] = defaultdict(Counter)
    by_instrumentation: dict[str, Counter] = defaultdict(Counter)
    pieces = 0
    for prompt, ensemble in headers:
        pieces += 1
        by_prompt[prompt][ensemble] += 1
        by_instrumentation[prompt.rsplit("_", 1)[-1]][ensemble] += 1

    def common(counts: Counter) -> list[dict]:
        return [{**ensemble.to_dict(), "pieces": n} for ensemble, n in counts.most_common(top) if n >= min_pieces]

    def table(groups: dict[str, Counter]) -> dict[str, list[dict]]:
        return {name: kept for name, counts in sorted(groups.items()) if (kept := common(counts))}

    return {"format": 1, "pieces": pieces, "min_pieces": min_pieces,
            "prompts": table(by_prompt), "instrumentations": table(by_instrumentation)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.ensembles", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a training.data build (its pieces/*.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="the table, e.g. assets/notagen/ensembles.json")
    parser.add_argument("--min-pieces", type=int, default=2, help="pieces an ensemble needs to be offered (default 2)")
    args = parser.parse_args(argv)
    table = ensemble_table(labelled_headers(args.data), args.min_pieces)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(f"{table['pieces']} labelled pieces: ensembles for {len(table['prompts'])} prompts and "
          f"{len(table['instrumentations'])} instrumentations in {args.out}")


if __name__ == "__main__":
    main()
