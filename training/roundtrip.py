"""Round trip of real scores through NotaGen's notation: open -> MusicXML -> interleaved ABC -> MusicXML.

What this trip loses is lost from a user's music when NotaGen continues or exports it, so every score is
compared part-measure by part-measure (sounding notes: pitch, onset, duration). Each score runs in its own
process with a timeout; results go to a JSON-lines file, one line per score, so a rerun resumes.

    nice -n 10 python -m training.roundtrip --out logs/roundtrip.jsonl [--corpora ../shared/corpora]
        [--music21] [--sample N] [--exclude earlier.jsonl] [--timeout 120] [--shard K/N]
    python -m training.roundtrip --out logs/roundtrip.jsonl --report     # reprint the summary
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import random
import re
import time
import zlib
from collections import Counter
from pathlib import Path

from engine.errors import ScoreError
from engine.score.formats import INPUT_FORMATS
from engine.score.notation_losses import Notes, abc_round_trip, changed_measures, measure_notes
from training.corpus import ComposerTable, PieceRef, WorkTable, iter_music21
from training.data import _read_document as read_document  # the data builder's reader, per piece kind

DEFAULT_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
EXAMPLES_PER_CLASS = 3
CHILD_GC_THRESHOLDS = (50_000, 50, 50)
"""A score's child process collects cyclic garbage rarely: music21's parse allocates millions of objects and
frees little until the process ends (about 15 % of a song's time went to collections)."""


def compare(before: list[list[Notes]], after: list[list[Notes]]) -> tuple[int, int, list[str]]:
    """(part-measures compared, intact, a few differences described) of the original's part-measures."""
    total, changed = changed_measures(before, after)
    differences = []
    for p, m in changed[:EXAMPLES_PER_CLASS]:
        other = after[p][m] if p < len(after) and m < len(after[p]) else None
        differences.append(f"part {p + 1} measure {m + 1}: {_notes(before[p][m])} -> "
                           f"{'missing' if other is None else _notes(other)}")
    return total, total - len(changed), differences


def _notes(notes: Notes, limit: int = 6) -> str:
    text = " ".join(f"{pitch:g}@{onset:g}/{length:g}" for pitch, onset, length in notes[:limit])
    return "[" + text + (" ..." if len(notes) > limit else "") + "]"


def check_score(ref: PieceRef) -> dict:
    """One score's record: whether it opens, round-trips, and how many part-measures stay intact."""
    record: dict = {"id": ref.id, "opened": False, "round_trip": False}
    stage = "open"
    try:
        document = read_document(ref)
        record["opened"] = True
        stored = _stored_text(ref)
        record["opening_changed"] = None if stored is None else opening_changes(stored, document.musicxml, ref.title)
        before = measure_notes(document)
        stage = "round trip"
        after = measure_notes(abc_round_trip(document))
        record["round_trip"] = True
        record["measures"], record["intact"], record["differences"] = compare(before, after)
        if record["intact"] < record["measures"]:
            record["invisible_only"] = record["measures"] - record["intact"] - len(
                changed_measures(measure_notes(document, printed_only=True), after)[1])
    except ScoreError as exc:
        record["error"] = f"{stage}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a survey records every failure and goes on
        record["error"] = f"{stage}: {type(exc).__name__}: {exc}"
    return record


_NOTES_AND_MEASURES = re.compile(r"<note\b.*?</note>|<measure\b[^>]*>", re.DOTALL)


def opening_changes(stored: str, opened: str, title: str) -> int:
    """Part-measures whose notes reading a MusicXML file changed: its stored text against the text the app
    reads (`opened`), which its MusicXML export writes back."""
    from engine.score.document import ScoreDocument

    if stored == opened or _NOTES_AND_MEASURES.findall(stored) == _NOTES_AND_MEASURES.findall(opened):
        return 0  # every measure and note element kept, character for character
    before, after = ScoreDocument(stored, title), ScoreDocument(opened, title)
    try:
        return len(changed_measures(measure_notes(before), measure_notes(after))[1])
    except ScoreError:  # music21 cannot read the stored text (what the repair was for): count every measure
        return sum(len(row) for row in measure_notes(after))


def _stored_text(ref: PieceRef) -> str | None:
    """A MusicXML file's stored text; None for other formats (they are converted, and their conversion is
    what the round trip starts from)."""
    from engine.score.formats import stored_musicxml

    return stored_musicxml(Path(ref.path).read_bytes(), ref.path) if ref.kind == "file" else None


def opening_survey(pieces: list[PieceRef]) -> str:
    """`opening_changes` of every MusicXML file among `pieces`, without the round trip: a few minutes for
    the corpora, since music21 reads only the files whose text reading changed."""
    from engine.score.formats import musicxml_of

    files = [ref for ref in pieces
             if ref.kind == "file" and INPUT_FORMATS.get(Path(ref.path).suffix.lower()) in ("musicxml", "mxl")]
    repaired, changed = [], []
    for ref in files:
        try:
            stored = _stored_text(ref)
            opened = musicxml_of(Path(ref.path).read_bytes(), ref.path)
        except ScoreError as exc:
            changed.append(f"{ref.id}: refused ({exc})")
            continue
        if opened != stored:
            count = opening_changes(stored, opened, ref.title)
            (changed if count else repaired).append(f"{ref.id}: {count} part-measures' notes changed")
    lines = [f"MusicXML files: {len(files)}; read as stored: {len(files) - len(repaired) - len(changed)}; "
             f"text repaired, every note kept: {len(repaired)}; notes changed or refused: {len(changed)}"]
    return "\n".join(lines + [f"  {line}" for line in repaired + changed])


def _worker(ref: PieceRef, connection) -> None:
    gc.set_threshold(*CHILD_GC_THRESHOLDS)
    connection.send(check_score(ref))


def prepare_workers() -> None:
    """Import the conversion path once in the parent, and freeze what is loaded, before forking a child per
    score: each child would otherwise import abctoolkit again (abc2xml builds its grammar at import, 0.2 s)
    and scan every object of the parent in its garbage collections."""
    import engine.score.notagen_abc  # noqa: F401 - imported for the children to inherit

    gc.collect()
    gc.freeze()


def check_with_timeout(ref: PieceRef, timeout: float) -> dict:
    """`check_score` in a child process, killed after `timeout` seconds (a failure class of its own)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(ref, sender), daemon=True)
    start = time.monotonic()
    process.start()
    record = receiver.recv() if receiver.poll(timeout) else None
    process.join(1)
    if process.is_alive():
        process.kill()
        process.join()
    if record is None:
        record = {"id": ref.id, "opened": False, "round_trip": False,
                  "error": f"timeout: more than {timeout:g} s" if process.exitcode in (None, -9) else
                  f"crash: the worker exited with code {process.exitcode}"}
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


def corpus_pieces(corpora: Path | None, music21_corpus: bool, sample: int = 0) -> list[PieceRef]:
    """The score files of the corpora folder and (optionally) the pieces of music21's corpus as the data
    builder splits them (one per ABC tune); with `sample`, that many of each, drawn with seed 0."""
    groups = []
    if corpora:
        groups.append([PieceRef(id=str(path.relative_to(corpora)), source="corpora", path=str(path), kind="file",
                                work="", split="", title=path.stem)
                       for path in sorted(corpora.rglob("*")) if path.suffix.lower() in INPUT_FORMATS])
    if music21_corpus:
        groups.append(list(iter_music21(ComposerTable.load(), WorkTable.load())))
    if sample:
        groups = [random.Random(0).sample(group, min(sample, len(group))) for group in groups]
    return [ref for group in groups for ref in sorted(group, key=lambda ref: ref.id)]


def failure_class(error: str) -> str:
    """An error message with its specifics (numbers, quoted text, file names) blanked, to count alike ones."""
    text = re.sub(r"^\S+\.(mxl|xml|musicxml|krn|abc|mid|midi)(\s*\([^)]*\))?:?\s*", "", error.split(": ", 1)[-1])
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
    return f"{error.split(': ', 1)[0]}: {text[:120]}"


def summary(records: list[dict]) -> str:
    """The figures: shares that open and round-trip, part-measures intact, failure classes with examples."""
    stopped = [r for r in records if r.get("error", "").startswith(("timeout", "crash"))]
    n = len(records) - len(stopped)
    opened = [r for r in records if r["opened"]]
    tripped = [r for r in opened if r["round_trip"]]
    measures = sum(r["measures"] for r in tripped)
    intact = sum(r["intact"] for r in tripped)
    invisible = sum(r.get("invisible_only", 0) for r in tripped)
    lines = [f"scores: {len(records)}, {len(stopped)} of them timed out or crashed; shares of the other {n}:",
             f"open: {len(opened)} ({100 * len(opened) / max(n, 1):.1f} %)",
             f"round-trip: {len(tripped)} of those opened ({100 * len(tripped) / max(len(opened), 1):.1f} %)",
             f"part-measures intact: {intact} of {measures} ({100 * intact / max(measures, 1):.2f} %), "
             f"{sum(r['intact'] == r['measures'] for r in tripped)} scores wholly intact",
             f"MusicXML files whose notes reading changed: {sum(bool(r.get('opening_changed')) for r in opened)} "
             f"of {sum(r.get('opening_changed') is not None for r in opened)}",
             f"changed only by invisible notes (played, not printed; ABC has no invisible note): {invisible} "
             f"part-measures; intact but for those: {intact + invisible} ({100 * (intact + invisible) / max(measures, 1):.2f} %)"]
    classes: dict[str, list[str]] = {}
    for record in records:
        if "error" in record:
            classes.setdefault(failure_class(record["error"]), []).append(f"{record['id']}: {record['error'][:200]}")
    changed = Counter()
    for record in tripped:
        if record["intact"] < record["measures"]:
            changed[record["id"]] = record["measures"] - record["intact"]
    lines.append("failure classes:")
    for name, examples in sorted(classes.items(), key=lambda item: -len(item[1])):
        lines.append(f"  {len(examples):4d}  {name}")
        lines += [f"          {example}" for example in examples[:EXAMPLES_PER_CLASS]]
    lines.append("scores with changed part-measures (most first):")
    for piece, count in changed.most_common(10):
        record = next(r for r in tripped if r["id"] == piece)
        lines.append(f"  {count:4d}  {piece}")
        lines += [f"          {difference}" for difference in record["differences"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON-lines results (resumed when it exists); needed but with --opening")
    parser.add_argument("--corpora", default=str(DEFAULT_CORPORA), help="folder of score files ('' for none)")
    parser.add_argument("--music21", action="store_true", help="add the music21 corpus")
    parser.add_argument("--sample", type=int, default=0, help="a random sample of this many scores of each source")
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="leave out the scores of an earlier run's JSON lines (a fresh sample)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per score")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="check only the scores of shard K of N (by a hash of their ids): N commands with the same "
                             "--out and K = 1..N run side by side (each line is appended whole)")
    parser.add_argument("--report", action="store_true", help="only print the summary of --out")
    parser.add_argument("--opening", action="store_true",
                        help="only check that reading each MusicXML file keeps its notes (no round trip, no --out)")
    args = parser.parse_args(argv)
    if args.opening:
        print(opening_survey(corpus_pieces(Path(args.corpora) if args.corpora else None, args.music21, args.sample)))
        return
    if args.out is None:
        parser.error("--out is needed (but with --opening)")
    records = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    if not args.report:
        pieces = corpus_pieces(Path(args.corpora) if args.corpora else None, args.music21, args.sample)
        done = {record["id"] for record in records}
        done |= {json.loads(line)["id"] for path in args.exclude for line in path.read_text().splitlines()}
        todo = [ref for ref in pieces if ref.id not in done]
        shard, shards = (int(number) for number in args.shard.split("/"))
        todo = [ref for ref in todo if zlib.crc32(ref.id.encode()) % shards == shard - 1]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        prepare_workers()
        with args.out.open("a") as out:
            for i, ref in enumerate(todo, 1):
                record = check_with_timeout(ref, args.timeout)
                out.write(json.dumps(record) + "\n")
                out.flush()
                records.append(record)
                print(f"[{i}/{len(todo)}] {ref.id}: {record.get('error') or 'ok'} ({record['seconds']} s)", flush=True)
    print(summary(records))


if __name__ == "__main__":
    main()
