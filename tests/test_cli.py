"""`python -m engine convert|check` as a user runs it: real files, real subprocesses."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.score.formats import read_score_file
from tests.helpers import corpus_path

ROOT = Path(__file__).resolve().parents[1]


def run_engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("suffix, magic", [
    (".musicxml", b"<?xml"), (".abc", b"X:"), (".mid", b"MThd"), (".ogg", b"OggS"), (".wav", b"RIFF"), (".svg", b"<svg"),
    (".pdf", b"%PDF"),
])
def test_convert_writes_each_format(tmp_path, suffix, magic):
    out = tmp_path / f"out{suffix}"
    result = run_engine("convert", corpus_path(), out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().lstrip()[: len(magic)] == magic


def test_convert_interleaved_abc_has_one_bar_per_line(tmp_path):
    out = tmp_path / "out.abc"
    assert run_engine("convert", corpus_path(), out, "--interleaved").returncode == 0
    body = [line for line in out.read_text().splitlines() if line.startswith("[V:")]
    assert len(body) == 10 and all(line.count("[V:") == 4 for line in body)


def test_convert_round_trip_through_abc(tmp_path):
    abc = tmp_path / "chorale.abc"
    back = tmp_path / "back.musicxml"
    assert run_engine("convert", corpus_path(), abc).returncode == 0
    assert run_engine("convert", abc, back).returncode == 0
    document = read_score_file(back)
    assert (document.n_parts, document.n_measures) == (4, 10)


def test_check_prints_measures_parts_abc_bars_bae():
    result = run_engine("check", corpus_path())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"measures": 10, "parts": 4, "abc_bars": 10, "bae": 0.0}


@pytest.mark.parametrize("content, name, fragment", [
    (b"", "empty.musicxml", "is empty"),
    (b"<score-partwise><part", "cut.musicxml", "not well-formed"),
    (b"MThd\x00\x00\x00\x06", "wrong.abc", "holds MIDI"),
])
def test_bad_file_exits_non_zero_with_one_line(tmp_path, content, name, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    for args in (("check", path), ("convert", path, tmp_path / "out.musicxml")):
        result = run_engine(*args)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and fragment in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_file_and_unknown_output_type(tmp_path):
    result = run_engine("check", tmp_path / "nope.musicxml")
    assert result.returncode == 1 and "no such file" in result.stderr
    result = run_engine("convert", corpus_path(), tmp_path / "out.docx")
    assert result.returncode == 1 and "unsupported output type" in result.stderr


def test_abc_export_writes_each_title_line_once(shared_dir, tmp_path):
    """An OpenScore quartet repeats its title and footer credits on every page; xml2abc made a `T:` line of
    each (the footer 30 times). The export, here as in the page's ABC download, writes each once."""
    quartet = shared_dir / "corpora" / "openscore-quartets" / "scores" / (
        "Saint_Georges_Joseph_Bologne__String_Quartet_in_C_minor_Op_1_No_4__sq8437280.mxl")
    out = tmp_path / "quartet.abc"
    result = run_engine("convert", quartet, out)
    assert result.returncode == 0, result.stderr
    titles = [line for line in out.read_text().splitlines() if line.startswith("T:")]
    assert titles and len(titles) == len(set(titles))
    assert "T:String Quartet in C minor" in titles and "T:OpenScore (CC0)" in titles
    assert read_score_file(out).n_parts == 4
