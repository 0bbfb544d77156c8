"""The texts real scores write in above and below annotations, for the decoder's written subset.

NotaGen writes a score's text directions as ABC annotations (`"^dolce"`, `"_cresc."`). Left free, a small
model spells words no score holds ("fgerrleno"), and allowed only real words it strings them in no real
order ("Andante cor cire A GG AFFETTO"). `engine.notagen.written_subset` lets it write only the texts of
this list, read from the interleaved text of a data build: every above or below annotation text that at
least `--min-pieces` pieces write and that `annotation_text_shaped` accepts (words, fingerings and
ordinals, at most 30 chars; not ABC music, not a lyric's syllables). The shipped list takes every such text
of the complete build (music21 corpus and both OpenScore corpora) with `--min-pieces 1`: a rarer text is
still a real score's ("Andante e con molto espressione"), and the decoder must let every real bar through
(`tests/test_bar_reader.py`).

    python -m training.annotation_texts --data DATA [--min-pieces 1] [--out engine/notagen/annotation_texts.txt]
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from engine.notagen.written_subset import ANNOTATION_TEXTS_FILE, annotation_text_shaped

_ANNOTATION = re.compile(r'"[\^_]([^"\n]*)"')


def count_texts(texts) -> Counter:
    """How many of `texts` (interleaved ABC) write each annotation text the model may copy."""
    pieces: Counter = Counter()
    for text in texts:
        pieces.update({annotation for annotation in _ANNOTATION.findall(text) if annotation_text_shaped(annotation)})
    return pieces


def build_texts(data: Path):
    """The interleaved text of every piece of a data build (`python -m training.data build`)."""
    for shard in sorted((data / "pieces").glob("shard-*.jsonl")):
        with shard.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line).get("interleaved") or ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a data build's folder")
    parser.add_argument("--min-pieces", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ANNOTATION_TEXTS_FILE)
    args = parser.parse_args(argv)
    texts = list(build_texts(args.data))
    pieces = count_texts(texts)
    kept = sorted(text for text, count in pieces.items() if count >= args.min_pieces)
    header = (f"# The annotation texts of {len(texts):,} pieces ({args.data.name}) that at least {args.min_pieces} of "
              f"them write; built by `python -m training.annotation_texts --data DATA --min-pieces {args.min_pieces}`.")
    args.out.write_text(header + "\n" + "\n".join(kept) + "\n", encoding="utf-8")
    print(f"{len(kept)} texts of {len(pieces)} -> {args.out}")


if __name__ == "__main__":
    main()
