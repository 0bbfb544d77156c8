"""The words real scores write in text annotations, for the decoder's written subset.

NotaGen writes a score's text directions as ABC annotations (`"^dolce"`, `"_cresc."`). Left free, a small
model spells words no score holds ("fgerrleno"); `engine.notagen.written_subset` lets it write only the
words of this list, read from the interleaved text of a data build: every word of an above or below
annotation, lowercased and without its parentheses or a final comma, that at least `--min-pieces` pieces
write. The shipped list takes every word of the complete build (music21 corpus and both OpenScore corpora)
with `--min-pieces 1`: a rarer word is still a real score's (Haydn's "M.D.C."), and the decoder must let
every real bar through (`tests/test_bar_reader.py`).

    python -m training.annotation_words --data DATA [--min-pieces 1] [--out engine/notagen/annotation_words.txt]
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from engine.notagen.written_subset import ANNOTATION_WORDS_FILE, annotation_word

_ANNOTATION = re.compile(r'"[\^_]([^"\n]*)"')


def count_words(texts) -> Counter:
    """How many of `texts` (interleaved ABC) write each annotation word."""
    pieces: Counter = Counter()
    for text in texts:
        pieces.update({word for annotation in _ANNOTATION.findall(text) for token in annotation.split(" ")
                       if (word := annotation_word(token))})
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
    parser.add_argument("--out", type=Path, default=ANNOTATION_WORDS_FILE)
    args = parser.parse_args(argv)
    texts = list(build_texts(args.data))
    pieces = count_words(texts)
    words = sorted(word for word, count in pieces.items() if count >= args.min_pieces)
    header = (f"# The annotation words of {len(texts):,} pieces ({args.data.name}) that at least {args.min_pieces} of "
              f"them write; built by `python -m training.annotation_words --data DATA --min-pieces {args.min_pieces}`.")
    args.out.write_text(header + "\n" + "\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words of {len(pieces)} -> {args.out}")


if __name__ == "__main__":
    main()
