"""The inpainting invariants, checked on real scores with random lock patterns.

    python -m engine.measure.check_inpaint --all          # >= 200 scores (music21 corpus + shared/corpora)
    python -m engine.measure.check_inpaint --limit 12     # a quick sample

For every score: a lock pattern (whole columns, one part, a hole at the start, middle or end), one
`inpaint` call, and the invariants below; a score the grid cannot hold must be refused with a
`ScoreError` (counted with its reason), never half-written.

* `locked_unchanged`: every measure whose staves are all locked keeps its MusicXML text; a locked
  staff of a partly rewritten piano measure, and the locked measures beside rewritten ones, keep
  their notes, ties, lyrics, dynamics, articulations and expressions as music21 reads them.
* `fills_measure`: every voice of a rewritten measure starts at its start and ends exactly at the
  original measure's length (a pickup or a short ending keeps its length).
* `parts_kept`: the part list (names, instruments), the parts' measure counts and numbers, and the
  clefs, keys and metres of the rewritten measures and their neighbours are those of the input.
* `lyrics_reported`: the cells reported as having lost lyrics are exactly the rewritten cells whose
  input had lyrics.
* `spanners_matched`: every slur, hairpin, ottava, pedal or other line start has its stop of the same
  number in its part and every stop its start (but where the input already lacked one), and a locked
  measure whose MusicXML changed differs only in such marks and is named in the warnings.
"""
from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import music21

from engine.errors import ScoreError
from engine.measure.inpaint import inpaint, load_model, padding_of
from engine.measure.representation import from_document
from engine.score.spanners import without_marks
from engine.score.xml_text import MEASURE_NUMBER
from engine.score.splice import excerpt_xml, measure_texts, part_names, rows_of_parts, unmatched_spanners

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
PATTERNS = ("columns", "part", "hole-start", "hole-middle", "hole-end")
INVARIANTS = ("locked_unchanged", "fills_measure", "parts_kept", "lyrics_reported", "spanners_matched")
_PART_LIST = re.compile(r"<part-list>.*?</part-list>", re.S)


def lock_pattern(kind: str, n_parts: int, n_columns: int, rng: random.Random) -> set[tuple[int, int]]:
    """Locked cells: everything but a few columns (or one part's few measures) of the given kind."""
    width = rng.randint(1, min(4, n_columns))
    if kind == "columns":
        free_columns = set(rng.sample(range(n_columns), min(n_columns, rng.randint(1, 5))))
    elif kind == "hole-start":
        free_columns = set(range(width))
    elif kind == "hole-end":
        free_columns = set(range(n_columns - width, n_columns))
    else:
        start = rng.randint(0, n_columns - width)
        free_columns = set(range(start, start + width))
    free_parts = [rng.randrange(n_parts)] if kind == "part" else range(n_parts)
    return {(p, m) for p in range(n_parts) for m in range(n_columns)} - {(p, m) for p in free_parts for m in free_columns}


def _signature(measure: music21.stream.Measure) -> list[tuple]:
    """What a composer sees in a measure, as music21 reads it."""
    items = []
    for element in measure.recurse():
        offset = element.getOffsetInHierarchy(measure)
        if isinstance(element, music21.note.GeneralNote):
            notes = element.notes if isinstance(element, music21.chord.Chord) else [element]
            items.append((
                "note", offset, element.quarterLength, tuple(p.nameWithOctave for p in element.pitches),
                tuple(n.tie.type if getattr(n, "tie", None) else "" for n in notes),
                tuple(lyric.text for lyric in element.lyrics), tuple(a.name for a in element.articulations),
                tuple(e.name for e in element.expressions),
            ))
        elif isinstance(element, (music21.dynamics.Dynamic, music21.clef.Clef, music21.key.KeySignature,
                                  music21.meter.TimeSignature)):
            items.append((type(element).__name__, offset, str(element)))
    return sorted(items, key=repr)


def _attributes(measure: music21.stream.Measure) -> list[str]:
    found = measure.recurse().getElementsByClass((music21.clef.Clef, music21.key.KeySignature, music21.meter.TimeSignature))
    return sorted(str(element) for element in found)


def _exact(quarters) -> Fraction:
    return Fraction(quarters).limit_denominator(1 << 20)


def _voice_problem(measure: music21.stream.Measure, expected) -> str:
    streams = ([measure] if measure.getElementsByClass(music21.note.GeneralNote) else []) + list(measure.voices)
    if not streams:
        return "no notes"
    for stream in streams:
        cursor = Fraction(0)
        for element in stream.getElementsByClass(music21.note.GeneralNote):
            if element.quarterLength == 0:
                continue
            if _exact(element.offset) != cursor:
                return f"a voice has an event at {element.offset}, expected {cursor}"
            cursor += _exact(element.quarterLength)
        if cursor != expected:
            return f"a voice lasts {cursor} quarters, the measure {expected}"
    return ""


def check(document, locked: set[tuple[int, int]], model, seed: int = 0) -> dict[str, list[str]]:
    """Inpaint `document` around `locked` and return the problems found per invariant. The measures
    near the rewritten ones are compared as music21 reads them in an excerpt of both texts
    (`excerpt_xml`: reading a whole long score twice per check would take minutes)."""
    from engine.score.document import ScoreDocument

    result = inpaint(document, locked, model=model, seed=seed)
    after = result.document
    problems: dict[str, list[str]] = {name: [] for name in INVARIANTS}
    layout = document.layout
    rows = rows_of_parts(document.musicxml, len(layout.parts))
    free = {(p, m) for p in range(len(layout.parts)) for m in range(len(layout.measures[p]))} - locked
    texts_before, texts_after = measure_texts(document.musicxml), measure_texts(after.musicxml)
    if [len(texts) for texts in texts_after] != [len(texts) for texts in texts_before]:
        problems["parts_kept"].append("the parts or their measure counts changed")
        return problems
    names, warnings = part_names(document.musicxml), "; ".join(result.warnings)
    for i, part_rows in enumerate(rows):
        for m, text in enumerate(texts_before[i]):
            if not any((p, m) in free for p in part_rows):
                if texts_after[i][m] == text:
                    continue
                if without_marks(texts_after[i][m]) != without_marks(text):
                    problems["locked_unchanged"].append(f"part {i + 1} measure {m + 1}: MusicXML text changed")
                elif not re.search(re.escape(f" in {names[i]} m. {MEASURE_NUMBER.match(text)['value']}") + "(,|;|$)", warnings):
                    problems["spanners_matched"].append(f"part {i + 1} measure {m + 1}: spanners changed unreported")
            elif MEASURE_NUMBER.match(texts_after[i][m])["value"] != MEASURE_NUMBER.match(text)["value"]:
                problems["parts_kept"].append(f"part {i + 1} measure {m + 1}: its number changed")
    for p, m, kind, number, role in sorted(unmatched_spanners(after.musicxml) - unmatched_spanners(document.musicxml)):
        problems["spanners_matched"].append(f"part {p + 1} measure {m + 1}: a {kind} {role} (number {number}) "
                                            f"without its {'stop' if role == 'start' else 'start'}")
    if _PART_LIST.search(document.musicxml)[0] != _PART_LIST.search(after.musicxml)[0]:
        problems["parts_kept"].append("the part list changed")
    near_columns = sorted({c for _, m in free for c in (m - 1, m, m + 1) if 0 <= c < len(layout.columns)})
    index = {c: k for k, c in enumerate(near_columns)}
    before_near = ScoreDocument(excerpt_xml(document.musicxml, set(near_columns))).layout.measures
    after_near = ScoreDocument(excerpt_xml(after.musicxml, set(near_columns))).layout.measures
    near = {(p, c) for p, m in free for c in (m - 1, m, m + 1) if 0 <= c < len(layout.measures[p])}
    for p, m in sorted(near):
        before, now = before_near[p][index[m]], after_near[p][index[m]]
        if (p, m) not in free and _signature(now) != _signature(before):
            problems["locked_unchanged"].append(f"row {p + 1} column {m + 1}: notes changed")
        if _attributes(now) != _attributes(before):
            problems["parts_kept"].append(f"row {p + 1} column {m + 1}: clef, key or metre changed")
    free_columns = sorted({m for _, m in free})
    before_cells = dict(zip(free_columns, zip(*from_document(document, columns=free_columns).cells)))
    lyrics = set()
    for p, m in sorted(free):
        cell = before_cells[m][p]
        problem = _voice_problem(after_near[p][index[m]], padding_of(cell)[1] * cell.beat_unit)
        if problem:
            problems["fills_measure"].append(f"row {p + 1} column {m + 1}: {problem}")
        if any(n.lyrics for n in layout.measures[p][m].recurse().notes):
            lyrics.add((p, m))
    if set(result.lyrics_removed) != lyrics:
        problems["lyrics_reported"].append(f"reported {sorted(result.lyrics_removed)}, expected {sorted(lyrics)}")
    return problems


def sources(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(kind, path) of `n` scores: lieder, quartets, choir, piano and others, in a mixed order."""
    from music21 import corpus

    rng = random.Random(seed)

    def take(paths, percent):
        k = -(-n * percent // 100)
        paths = sorted(str(p) for p in paths)
        return rng.sample(paths, min(k, len(paths)))

    def composer(name, extensions=("mxl", "xml", "musicxml", "krn")):
        return [str(p) for p in corpus.getComposer(name) if str(p).rsplit(".", 1)[-1] in extensions]

    groups = [
        ("voice+piano", take((CORPORA / "openscore-lieder" / "scores").glob("*.mxl"), 40)),
        ("quartet", take((CORPORA / "openscore-quartets" / "scores").glob("*.mxl"), 8)),
        ("quartet", take(composer("haydn") + composer("mozart") + composer("beethoven"), 8)),
        ("choir", take(composer("bach"), 20)),
        ("choir", take(composer("monteverdi") + composer("palestrina") + composer("josquin"), 12)),
        ("piano and more", take(composer("joplin") + composer("chopin") + composer("schoenberg") + composer("trecento")
                                + composer("schubert") + composer("handel") + composer("weber") + composer("verdi")
                                + composer("cpebach") + composer("corelli") + composer("demos"), 12)),
    ]
    chosen = [(kind, path) for kind, paths in groups for path in paths]
    rng.shuffle(chosen)
    return chosen[:n]


def _document(path: str):
    """The score as the app opens it (a MusicXML file keeps its own text; other formats are converted)."""
    from engine.score.formats import read_score_file

    return read_score_file(path)


def run(paths: list[tuple[str, str]], model, log=print) -> dict:
    failed, checked, refused, patterns = Counter(), Counter(), [], Counter()
    rng = random.Random(0)
    for index, (kind, path) in enumerate(paths):
        started = time.time()
        pattern = PATTERNS[index % len(PATTERNS)]
        try:
            document = _document(path)
            locked = lock_pattern(pattern, document.n_parts, document.n_measures, rng)
            problems = check(document, locked, model, seed=index)
        except ScoreError as exc:
            refused.append((Path(path).name, str(exc)))
            log(f"REFUSED {kind} {Path(path).name}: {exc}")
            continue
        except Exception as exc:  # a crash is a failure of its own: list it, go on with the others
            failed["no crash"] += 1
            log(f"FAIL crash {kind} {Path(path).name} ({pattern}): {type(exc).__name__}: {exc}")
            continue
        patterns[pattern] += 1
        for name, found in problems.items():
            checked[name] += 1
            if found:
                failed[name] += 1
                log(f"FAIL {name} {kind} {Path(path).name} ({pattern}): {'; '.join(found[:3])}")
        log(f"{index + 1}/{len(paths)} {kind} {Path(path).name} {pattern} {time.time() - started:.1f} s")
    return {"checked": checked, "failed": failed, "refused": refused, "patterns": patterns}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="200 scores")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--shard", default="0/1", help="K/N: check every N-th score from the K-th (parallel runs)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    shard, shards = (int(x) for x in args.shard.split("/"))
    report = run(sources(200 if args.all else args.limit)[shard::shards], load_model(args.checkpoint))
    print(f"crashed: {report['failed']['no crash']} scores")
    for name in INVARIANTS:
        print(f"{name}: {report['checked'][name] - report['failed'][name]}/{report['checked'][name]} scores pass")
    print(f"lock patterns: {dict(report['patterns'])}")
    print(f"refused with ScoreError: {len(report['refused'])}")
    for name, reason in report["refused"]:
        print(f"  {name}: {reason}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
