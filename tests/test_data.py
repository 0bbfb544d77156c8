"""The dataset builder: label tables, work ids and splits, ABC tune splitting, sharded resumable
builds, failure recording and the report (training/corpus.py, training/data.py).

The build tests convert a dozen pieces (`--limit 4` of three sources: Bach chorales, tunes of a
multi-tune Essen ABC file, and an extra folder with a song, a two-tune ABC file and a broken file).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from training import data
from training.corpus import (
    INSTRUMENTATIONS,
    PERIODS,
    SPLITS,
    ComposerTable,
    Labels,
    PieceRef,
    SourceSpec,
    WorkTable,
    catalogue_number,
    iter_music21,
    iter_pieces,
    load_music21_rules,
    music21_corpus_root,
    period_from_dates,
    split_abc_tunes,
    split_of,
    work_key,
)

# ---------------------------------------------------------------------------------------------
# label tables
# ---------------------------------------------------------------------------------------------


def test_composer_periods_follow_their_dates_unless_overridden():
    table = ComposerTable.load()
    assert len(table) > 150
    for composer in table:
        assert composer.period in PERIODS
        assert composer.name == composer.name.encode("ascii", "ignore").decode(), "names are ASCII, as NotaGen's prompts"
        if composer.birth is not None and not composer.note.startswith("override"):
            assert composer.period == period_from_dates(composer.birth, composer.death), composer


def test_composer_lookup_by_other_spellings():
    table = ComposerTable.load()
    assert table.find("Dvořák, Antonín").name == "Dvorak, Antonin"
    assert table.find("Faisst, Clara Mathilda").name == "Faisst, Clara"
    assert table.find("Francesco Landini").name == "Landini, Francesco"
    assert table.find("Philippe de Vitry\n(1291 - 1361)").name == "Vitry, Philippe de"
    assert table.find("Johannes Ciconia (opus dubium)").name == "Ciconia, Johannes"
    assert table.find("anonymous Venice Fava 4") is None


def test_official_prompt_spellings_and_periods(notagen_reference):
    """Every composer of NotaGen's official prompt list is in the table, spelled and dated the same."""
    table = ComposerTable.load()
    for line in (notagen_reference / "official_prompts.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        period, rest = line.split("_", 1)
        composer, instrumentation = rest.rsplit("_", 1)
        assert instrumentation in INSTRUMENTATIONS
        found = table.find(composer)
        assert found is not None and found.name == composer, line
        assert found.period == period, line


def test_openscore_composers_are_all_in_the_table(shared_dir):
    table = ComposerTable.load()
    for collection in ("openscore-lieder", "openscore-quartets"):
        with open(shared_dir / "corpora" / collection / "metadata.csv", newline="", encoding="utf-8") as handle:
            missing = {row["composer"] for row in csv.DictReader(handle) if table.find(row["composer"]) is None}
        assert not missing, f"{collection}: {sorted(missing)}"


def test_every_music21_file_has_a_rule_and_labelled_rules_name_known_composers():
    rules = load_music21_rules()
    table = ComposerTable.load()
    for rule in rules:
        if rule.composer and rule.composer != "@file":
            assert table.find(rule.composer) is not None, rule
        assert rule.note, f"{rule.pattern}: every decision says why"
    refs = list(iter_music21(table, WorkTable.load()))
    by_source = Counter(ref.source for ref in refs)
    assert by_source["music21/bach"] > 400 and by_source["music21/palestrina"] > 1000
    assert by_source["music21/essenFolksong"] > 8000, "multi-tune ABC files are split into tunes"
    assert len({ref.id for ref in refs}) == len(refs)
    folk = [ref for ref in refs if ref.source in ("music21/essenFolksong", "music21/oneills1850", "music21/ryansMammoth")]
    assert folk and all(ref.labels is None for ref in folk), "folk tunes have no composer: pre-training only"
    assert {ref.labels.prompt for ref in refs if ref.source == "music21/beethoven"} == {"Classical_Beethoven, Ludwig van_Chamber"}


# ---------------------------------------------------------------------------------------------
# works and splits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("String Quartet No.1, Op.18 No.1", ("op", "18")),
        ("beethoven/opus18no1/movement1.mxl", ("op", "18")),
        ("webern_dormi_jesu_op_16_no_2", ("op", "16")),
        ("String Quartet No.2 in D major, K.155134a", ("k", "155")),
        ("String Quartet No.1 in G major, K.8073f", ("k", "80")),
        ("String Quartet No.17 in B-flat major, K.458 (Op. 10 No. 3)", ("k", "458")),
        ("mozart/k458/movement1.mxl", ("k", "458")),
        ("bach/bwv248.42-4.mxl", ("bwv", "248")),
        ("String Quartet in B-flat major (“La Chasse”), Hob. III1", ("hob-iii", "1")),
        ("Winterreise, D.911 / 5 Der Lindenbaum", ("d", "911")),
        ("String Quartet in D minor", None),
        ("Kyrie", None),
    ],
)
def test_catalogue_numbers(text, expected):
    assert catalogue_number(text) == expected


def test_one_work_from_two_collections_gets_one_id():
    works = WorkTable.load()
    assert work_key("Haydn, Joseph", "String Quartet in C major, Hob.III72", "x", works) == work_key(
        "Haydn, Joseph", "opus74no1", "y", works
    )
    assert work_key("Mozart, Wolfgang Amadeus", "String Quartet No.2 in D major, K.155134a", "x", works) == work_key(
        "Mozart, Wolfgang Amadeus", "k155", "y", works
    )
    assert work_key(None, "Just for Today", "openscore-lieder") == "openscore-lieder/just-for-today"


def test_split_is_a_stable_hash_of_the_work():
    counts = Counter(split_of(f"composer/work-{i}") for i in range(20000))
    assert set(counts) == set(SPLITS)
    assert 0.88 < counts["train"] / 20000 < 0.92
    assert 0.04 < counts["validation"] / 20000 < 0.06
    assert split_of("bach-johann-sebastian/bwv248") == split_of("bach-johann-sebastian/bwv248")


def test_split_abc_tunes_keeps_the_file_header():
    text = b"% comment\nI:abc-charset utf-8\nL:1/8\n\nX:1\nT:One\nK:C\nCDEF|\n\nX:7\nT:Two\nK:G\nGABc|\n"
    header, tunes = split_abc_tunes(text)
    assert header == b"I:abc-charset utf-8\nL:1/8\n"
    assert [(t.ordinal, t.number, t.title) for t in tunes] == [(1, "1", "One"), (2, "7", "Two")]
    assert text[tunes[1].start : tunes[1].end].startswith(b"X:7")
    header, tunes = split_abc_tunes(b"T:Lone\nK:C\nCDEF|\n")
    assert header == b"" and len(tunes) == 1 and tunes[0].title == "Lone"


def test_labels_reject_unknown_classes():
    with pytest.raises(ValueError):
        Labels("Baroque", "Bach, Johann Sebastian", "Keyboards")
    assert Labels("Baroque", "Bach, Johann Sebastian", "Keyboard").prompt == "Baroque_Bach, Johann Sebastian_Keyboard"


# ---------------------------------------------------------------------------------------------
# time limit and watchdog
# ---------------------------------------------------------------------------------------------


def _ref(piece_id: str) -> PieceRef:
    return PieceRef(id=piece_id, source="test", path="/nonexistent", kind="file", work="w", split="train", title="t")


def _spin(ref):
    while True:  # a pathological file: music21 or abctoolkit looping
        pass


def test_a_piece_over_its_time_limit_is_recorded_not_waited_for(monkeypatch):
    monkeypatch.setattr(data, "_worker_timeout_s", 1)
    monkeypatch.setattr(data, "_read_document", _spin)
    previous = signal.signal(signal.SIGPROF, data._on_alarm)
    try:
        started = time.monotonic()
        result = data.convert_piece(_ref("slow"), ("C",))
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    assert time.monotonic() - started < 10
    assert result["piece"] is None
    assert result["failures"] == [{"stage": "read", "reason": "over the time limit of 1 CPU seconds (--timeout)"}]


def _die_or_fail(ref):
    if ref.id == "die":
        os._exit(1)  # a worker killed from outside (e.g. by the OOM killer) looks like this
    raise ValueError("not a score")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers inherit the patched reader only under fork")
def test_a_dead_worker_costs_one_piece_not_the_build(monkeypatch):
    monkeypatch.setattr(data, "_read_document", _die_or_fail)
    monkeypatch.setattr(data, "WATCHDOG_GRACE_S", 1)
    monkeypatch.setattr(data, "WATCHDOG_FACTOR", 1)
    runner = data.PieceRunner(workers=1, keys=("C",), timeout_s=1, max_memory_mb=0)
    try:
        results = list(runner.run(data._Task(0, _ref(name)) for name in ("a", "die", "b")))
    finally:
        runner.close()
    assert [task.ref.id for task, _ in results] == ["a", "die", "b"]
    assert results[1][1]["failures"][0]["stage"] == "worker"
    assert "died or hung" in results[1][1]["failures"][0]["reason"]
    assert results[2][1]["failures"][0]["reason"] == "ValueError: not a score"
    assert runner.restarts == 1


# ---------------------------------------------------------------------------------------------
# a small build
# ---------------------------------------------------------------------------------------------

SONG = "schumann_robert/opus48no2.mxl"
TWO_TUNES = """% two tunes in one file
L:1/8

X:1
T:First Tune
M:4/4
K:D
DFAd fedc|BAGF E4|DFAd fedc|d2f2 d4|]

X:2
T:Second Tune
M:3/4
K:G
GAB cBA|G2B2 d2|cBA BAG|G6|]
"""


@pytest.fixture(scope="module")
def extra_dir(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mini-lieder")
    (folder / "scores").mkdir()
    shutil.copy(music21_corpus_root() / SONG, folder / "scores" / "song.mxl")
    (folder / "scores" / "tunes.abc").write_text(TWO_TUNES, encoding="utf-8")
    (folder / "scores" / "broken.musicxml").write_text("<?xml version='1.0'?>\n<score-partwise><part id='P1'><measure", encoding="utf-8")
    labels = folder / "metadata.csv"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "composer", "work", "source_path", "period", "instrumentation"])
        writer.writerow(["scores/song.mxl", "Schumann, Robert", "Dichterliebe, Op.48 / 2 Aus meinen Thränen", "x", "", ""])
        writer.writerow(["scores/tunes.abc", "Nobody, Known", "Two Tunes", "x", "Romantic", "Keyboard"])
        writer.writerow(["scores/broken.musicxml", "Composer, Some", "Broken", "x", "", ""])
    return folder, labels


def _build(out: Path, extra: tuple[Path, Path], quiet: bool = True) -> dict:
    folder, labels = extra
    argv = [
        "build", "--out", str(out), "--limit", "4", "--sources", "bach,essenFolksong,mini-lieder",
        "--shard-size", "5", "--workers", "2", "--timeout", "120",
        "--extra-dir", str(folder), "--extra-labels", str(labels), "--extra-instrumentation", "Art Song",
        "--extra-name", "mini-lieder",
    ]
    assert data.main(argv + (["--quiet"] if quiet else [])) == 0
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _digests(out: Path) -> dict[str, str]:
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for name in data.SHARD_DIRS
        for path in sorted((out / name).glob("shard-*.jsonl"))
    }


def _jsonl(out: Path, kind: str) -> list[dict]:
    return list(data.iter_records(out, kind))


@pytest.fixture(scope="module")
def built(tmp_path_factory, extra_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data")
    return out, _build(out, extra_dir)


def test_shards_and_markers(built):
    out, report = built
    # 4 chorales + 4 Essen tunes + (song, 2 tunes, broken) = 12 inputs -> shards of 5, 5, 2
    assert report["totals"]["inputs"] == 12
    assert report["shards"] == {"total": 3, "done": 3, "built_this_run": 3, "skipped_this_run": 0}
    for index, size in enumerate((5, 5, 2)):
        for name in data.SHARD_DIRS:
            assert (out / name / f"shard-{index:05d}.jsonl").is_file()
        marker = data.read_marker(out, index)
        assert marker["inputs"] == size and len(marker["inputs_hash"]) == 64
    assert not list(out.rglob("*.tmp"))


def test_pieces_carry_notagen_texts_labels_and_multi_tune_abc_is_split(built):
    out, _ = built
    pieces = {p["id"]: p for p in _jsonl(out, "pieces")}
    assert set(pieces) == {
        "music21/bach/bwv1.6.mxl", "music21/bach/bwv10.7.mxl", "music21/bach/bwv101.7.mxl", "music21/bach/bwv102.7.mxl",
        *(f"music21/essenFolksong/altdeu10.abc#{i}" for i in range(1, 5)),
        "mini-lieder/scores/song.mxl", "mini-lieder/scores/tunes.abc#1", "mini-lieder/scores/tunes.abc#2",
    }
    from engine.score.notagen_abc import KEYS

    for piece in pieces.values():
        assert set(piece["keys"]) == set(KEYS)
        assert "[V:1]" in piece["interleaved"] and piece["original_key"]
        assert piece["bars"] > 0
    assert pieces["music21/bach/bwv1.6.mxl"]["prompt"] == "Baroque_Bach, Johann Sebastian_Choral"
    assert pieces["music21/essenFolksong/altdeu10.abc#1"]["prompt"] is None
    assert pieces["music21/essenFolksong/altdeu10.abc#2"]["title"] == "Herzog Ernst"
    song = pieces["mini-lieder/scores/song.mxl"]
    assert song["labels"] == {"period": "Romantic", "composer": "Schumann, Robert", "instrumentation": "Art Song"}
    assert song["work"] == "schumann-robert/op48"
    assert pieces["mini-lieder/scores/tunes.abc#2"]["title"] == "Second Tune"
    # a composer missing from the table is labelled by the CSV's own period and instrumentation
    assert pieces["mini-lieder/scores/tunes.abc#2"]["prompt"] == "Romantic_Nobody, Known_Keyboard"
    assert pieces["mini-lieder/scores/tunes.abc#1"]["work"] == pieces["mini-lieder/scores/tunes.abc#2"]["work"]


def test_finetune_index_and_prompts(built):
    out, report = built
    pieces = _jsonl(out, "pieces")
    index = _jsonl(out, "finetune")
    assert {r["id"] for r in index} == {p["id"] for p in pieces if p["prompt"]}
    for record in index:
        with open(out / "pieces" / f"{record['shard']}.jsonl", encoding="utf-8") as handle:
            line = handle.readlines()[record["line"]]
        assert json.loads(line)["id"] == record["id"]
    assert {r["id"] for r in data.iter_finetune(out)} == {r["id"] for r in index}
    text = data.finetune_text(next(data.iter_finetune(out)), "C")
    assert text.startswith("%Baroque\n%Bach, Johann Sebastian\n%Choral\n")

    assert not (out / "grids").exists()  # the measure model reads its own grids (training.measure)

    expected = Counter(r["prompt"] for r in index)
    assert {p: c["total"] for p, c in report["prompts"].items()} == dict(expected)
    rows = list(csv.DictReader(open(out / "prompts.tsv", encoding="utf-8"), delimiter="\t"))
    assert {r["prompt"]: int(r["total"]) for r in rows} == dict(expected)
    assert all(r["prompt"] == f"{r['period']}_{r['composer']}_{r['instrumentation']}" for r in rows)


def test_splits_are_by_work(built):
    out, report = built
    splits_of_work = defaultdict(set)
    for kind in ("pieces", "finetune"):
        for record in _jsonl(out, kind):
            splits_of_work[record["work"]].add(record["split"])
            assert record["split"] == split_of(record["work"])
    assert all(len(s) == 1 for s in splits_of_work.values())
    assert sum(report["splits"]["pieces"].values()) == report["totals"]["pieces"] == 11


def test_failures_are_recorded_with_reasons(built):
    out, report = built
    failures = {f["id"]: f for f in _jsonl(out, "failures")}
    assert set(failures) == {"mini-lieder/scores/broken.musicxml"}
    assert failures["mini-lieder/scores/broken.musicxml"]["stage"] == "read"
    assert "not well-formed" in failures["mini-lieder/scores/broken.musicxml"]["reason"]
    assert report["totals"]["failed"] == 1
    assert report["failure_stages"] == {"read": 1}
    assert report["sources"]["mini-lieder"] == {**report["sources"]["mini-lieder"], "inputs": 4, "pieces": 3, "failed": 1}
    assert any("Composer, Some" in note for note in report["unlabelled_reasons"])


def test_report_files_and_bae(built, capsys):
    out, report = built
    assert report["complete"]
    assert report["bae"]["bars"] > 0 and report["bae"]["percent"] is not None
    assert set(report["sources"]) == {"music21/bach", "music21/essenFolksong", "mini-lieder"}
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "corpus BAE" in markdown and "Baroque_Bach, Johann Sebastian_Choral" in markdown
    assert "broken.musicxml" in markdown
    assert data.main(["report", "--out", str(out)]) == 0
    assert "# Dataset build report" in capsys.readouterr().out


def test_resume_skips_finished_shards_and_changes_nothing(built, extra_dir):
    out, _ = built
    before = _digests(out)
    started = time.monotonic()
    report = _build(out, extra_dir)
    assert report["shards"]["skipped_this_run"] == 3 and report["shards"]["built_this_run"] == 0
    assert report["runs"] == 2
    assert _digests(out) == before
    assert time.monotonic() - started < 20

    # an interrupted shard (no marker) is rebuilt, identically
    (out / "pieces" / "shard-00001.done").unlink()
    (out / "pieces" / "shard-00001.jsonl").write_text("partial", encoding="utf-8")
    report = _build(out, extra_dir)
    assert report["shards"]["built_this_run"] == 1 and report["shards"]["skipped_this_run"] == 2
    assert _digests(out) == before


def test_a_second_build_is_identical(built, extra_dir, tmp_path):
    out, _ = built
    again = _build(tmp_path / "again", extra_dir)
    assert _digests(tmp_path / "again") == _digests(out)
    assert again["prompts"] == json.loads((out / "report.json").read_text())["prompts"]


def test_iter_pieces_limit_and_sources(extra_dir):
    folder, labels = extra_dir
    refs = list(iter_pieces([SourceSpec("music21"), SourceSpec("extra", str(folder), str(labels), "Art Song", "mini-lieder")],
                            sources=["bach", "mini-lieder"], limit=1))
    assert [r.source for r in refs] == ["music21/bach", "mini-lieder"]


def test_openscore_csv_from_a_converted_repository(tmp_path):
    song = tmp_path / "scores" / "Schumann,_Robert" / "Dichterliebe,_Op.48" / "2_Aus_meinen_Tränen" / "lc1.mxl"
    alone = tmp_path / "scores" / "Abbott,_Jane_Bingham" / "_" / "Just_for_Today" / "lc2.mxl"
    quartet = tmp_path / "scores" / "Dvořák,_Antonín" / "String_Quartet_No.12,_Op.96" / "sq3.mxl"
    for path in (song, alone, quartet):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    (song.parent / "lc1.mscx").write_bytes(b"")
    out = tmp_path / "metadata.csv"
    assert data.main(["openscore-csv", "--dir", str(tmp_path), "--csv", str(out)]) == 0
    rows = {r["file"]: r for r in csv.DictReader(open(out, encoding="utf-8"))}
    assert len(rows) == 3
    assert rows[song.relative_to(tmp_path).as_posix()]["work"] == "Dichterliebe, Op.48 / 2 Aus meinen Tränen"
    assert rows[alone.relative_to(tmp_path).as_posix()]["composer"] == "Abbott, Jane Bingham"
    assert rows[alone.relative_to(tmp_path).as_posix()]["work"] == "Just for Today"
    refs = list(iter_pieces([SourceSpec("extra", str(tmp_path), str(out), "Art Song", "lieder")]))
    assert {r.labels.composer for r in refs} == {"Schumann, Robert", "Abbott, Jane Bingham", "Dvorak, Antonin"}
    assert {r.work for r in refs} >= {"schumann-robert/op48", "dvorak-antonin/op96"}
