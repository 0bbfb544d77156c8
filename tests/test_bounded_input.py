"""Bounded work on every input (issue #22): size limits before parsing, the import and render workers' time
and memory budgets, restored sessions read as uploads, one-line errors, and exports the app can read back.

The hostile files are made here in code: a few bytes each that once cost minutes and gigabytes.
"""
from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zipfile

import pytest

from engine.errors import ScoreError
from engine.render.audio import audio_problem
from engine.score.formats import read_score
from engine.score.limits import MAX_MEASURES
from engine.score.document import ScoreDocument
from engine.score.sandbox import ImportBudget, RenderBudget
from engine.service import Composer
from tests.helpers import corpus_path
from tests.test_cli import run_engine

NOTE = "<note><pitch><step>C</step><octave>4</octave></pitch><duration>{d}</duration><type>whole</type></note>"


def musicxml(measures: int = 2, parts: int = 1, divisions: int = 1, declaration: str = "") -> str:
    """A score of whole notes: `parts` parts of `measures` measures."""
    part_list = "".join(f'<score-part id="P{p}"><part-name>P{p}</part-name></score-part>' for p in range(parts))
    first = (f'<measure number="1"><attributes><divisions>{divisions}</divisions><time><beats>4</beats>'
             f"<beat-type>4</beat-type></time></attributes>{NOTE.format(d=4 * divisions)}</measure>")
    rest = "".join(f'<measure number="{n}">{NOTE.format(d=4 * divisions)}</measure>' for n in range(2, measures + 1))
    body = "".join(f'<part id="P{p}">{first}{rest}</part>' for p in range(parts))
    return f"{declaration}<score-partwise><part-list>{part_list}</part-list>{body}</score-partwise>"


def midi(*tracks: bytes, division: int = 480, declared: int | None = None) -> bytes:
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks) if declared is None else declared, division)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(track)) + track for track in tracks)


ONE_NOTE = b"\x00\x90\x3c\x40\x83\x60\x80\x3c\x00\x00\xff\x2f\x00"
HUGE_DELTAS = b"\x00\x90\x3c\x40" + b"\x8f\xff\xff\x7f\x80\x3c\x00" * 8 + b"\x00\xff\x2f\x00"


def mxl(xml: bytes, encrypted: bool = False, method: int | None = None) -> bytes:
    """An .mxl archive of `xml`, its flags patched to claim encryption or an unknown compression method."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("score.xml", xml)
    data = bytearray(buffer.getvalue())
    central = data.find(b"PK\x01\x02")
    if encrypted:
        data[6] |= 1
        data[central + 8] |= 1
    if method is not None:
        data[8:10] = data[central + 10: central + 12] = struct.pack("<H", method)
    return bytes(data)


HOSTILE = {  # file name -> (bytes, words the message must hold)
    "huge-deltas.mid": (lambda: midi(HUGE_DELTAS), "quarter notes long"),
    "3000-tracks.mid": (lambda: midi(*[ONE_NOTE] * 3000), "3,000 MIDI tracks"),
    "zero-division.mid": (lambda: midi(ONE_NOTE, division=0), "0 ticks per quarter note"),
    "100000-measures.musicxml": (lambda: musicxml(100_000).encode(), "100,000 measures in a part"),
    "100-parts.musicxml": (lambda: musicxml(1, parts=100).encode(), "100 parts"),
    "zero-divisions.musicxml": (lambda: musicxml(divisions=0).encode(), "<divisions>0</divisions>"),
    "long-note.musicxml": (lambda: musicxml().replace("<duration>4<", "<duration>99999999<").encode(),
                           "quarter notes long"),
    "klingon.musicxml": (lambda: musicxml(declaration='<?xml version="1.0" encoding="klingon"?>').encode(),
                         "'klingon', which is unknown"),
    "encrypted.mxl": (lambda: mxl(musicxml().encode(), encrypted=True), "encrypted"),
    "compression-99.mxl": (lambda: mxl(musicxml().encode(), method=99), "compression method"),
    "one-line.abc": (lambda: b"X:1\nM:4/4\nL:1/8\nK:C\n" + b"CDEF " * 200_000 + b"|\n", "a line of 1,000,001"),
    "tunebook.abc": (lambda: b"".join(b"X:%d\nM:4/4\nL:1/4\nK:C\nCDEF|\n\n" % i for i in range(1, 4)), "3 ABC tunes"),
    "10000-spines.krn": (lambda: ("\t".join(["**kern"] * 10_000) + "\n" + "\t".join(["4c"] * 10_000)
                                  + "\n*-\n").encode(), "10,000 Humdrum spines"),
    "many-bars.krn": (lambda: ("**kern\n*M4/4\n" + "=\n1c\n" * (MAX_MEASURES + 1) + "*-\n").encode(), "measures"),
    "utf16-notes.abc": (lambda: "X:1\nM:4/4\nL:1/4\nK:C\nCDEF|".encode("utf-16-le"), "binary data"),
}


@pytest.fixture(scope="module")
def composer():
    composer = Composer()
    composer.warm_up()
    return composer


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_is_refused_at_once_naming_the_limit(composer, name):
    make, words = HOSTILE[name]
    data = make()
    started = time.perf_counter()
    with pytest.raises(ScoreError, match=words) as raised:
        composer.open_bytes(data, name)
    message = str(raised.value)
    assert name in message and "\n" not in message and "unexpected" not in message
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("name", ["huge-deltas.mid", "one-line.abc"])
def test_cli_refuses_hostile_file_quickly(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HOSTILE[name][0]())
    started = time.perf_counter()
    result = run_engine("convert", path, tmp_path / "out.musicxml")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and HOSTILE[name][1] in result.stderr
    assert time.perf_counter() - started < 60


def _vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_time_budget_stops_a_slow_read_and_the_next_one_works():
    composer = Composer(import_budget=ImportBudget(time_s=0.5))
    with pytest.raises(ScoreError, match=r"took longer than the 0.5 s import time limit .*--import-time-limit"):
        composer.open_bytes(musicxml(2000).encode(), "slow.musicxml")
    assert composer.open_file(corpus_path()).n_measures == 10


def test_memory_budget_stops_a_greedy_read_and_memory_stays_where_it_was():
    composer = Composer(import_budget=ImportBudget(time_s=120, memory_mb=256))
    assert composer.open_file(corpus_path()).n_measures == 10
    data = musicxml(3000, parts=40).replace(NOTE.format(d=4), '<note><rest measure="yes"/><duration>4</duration></note>')
    before = _vm_rss_kib()
    with pytest.raises(ScoreError, match="more than the 256 MB import memory limit .*--import-memory-mb"):
        composer.open_bytes(data.encode(), "greedy.musicxml")
    assert _vm_rss_kib() - before < 64 * 1024  # the reading happened in the worker, now gone
    assert composer.open_file(corpus_path()).n_measures == 10


def test_budget_costs_a_typical_open_little():
    data = corpus_path().read_bytes()
    composer = Composer()
    composer.open_bytes(data, "warm.mxl")
    direct, sandboxed = [], []
    for _ in range(3):
        started = time.perf_counter()
        read_score(data, "chorale.mxl").grid
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        composer.open_bytes(data, "chorale.mxl").grid  # the worker reads it; the app parses its result once
        sandboxed.append(time.perf_counter() - started)
    assert min(sandboxed) - min(direct) < 0.3


def test_budget_flags_are_checked():
    with pytest.raises(ValueError, match="at least 256 MB"):
        ImportBudget(memory_mb=10)
    result = run_engine("check", corpus_path(), "--import-time-limit", "0")
    assert result.returncode == 1 and "time limit above 0 s" in result.stderr



# --- engraving, audio and exports: the render budget ---------------------------------------------------------

def test_render_memory_budget_stops_a_greedy_engraving_and_memory_stays_where_it_was():
    """12 MB of empty elements verovio keeps in memory (385 MB at its peak, where 1 MB of notes takes 150)."""
    composer = Composer(render_budget=RenderBudget(memory_mb=256))
    chorale = composer.open_file(corpus_path())
    assert composer.engrave(chorale).pages
    greedy = ScoreDocument(musicxml().replace("<note>", "<a/>" * 3_000_000 + "<note>", 1), "greedy")
    before = _vm_rss_kib()
    with pytest.raises(ScoreError, match=r"^engraving this score needed more than the 256 MB render memory limit "
                                         r"and was stopped \(the limit is --render-memory-mb\)$"):
        composer.engrave(greedy)
    assert _vm_rss_kib() - before < 64 * 1024  # verovio ran in its worker, now gone
    assert composer.export(chorale, "svg").startswith(b"<svg")


@pytest.mark.skipif(audio_problem() is not None, reason="needs FluidSynth and a SoundFont")
def test_render_budget_stops_audio_too_large_for_it_and_memory_stays_where_it_was():
    """60 whole-note bars at a quarter of the tempo: 8 minutes, 84 MB of WAV, over a quarter of 256 MB."""
    composer = Composer(render_budget=RenderBudget(memory_mb=256))
    long = composer.open_bytes(musicxml(60).encode(), "long.musicxml")
    before = _vm_rss_kib()
    with pytest.raises(ScoreError, match=r"WAV audio of this score would be larger than 64 MB, a quarter of the "
                                         r"render memory limit \(--render-memory-mb\)"):
        composer.export(long, "wav", tempo=0.25)
    assert _vm_rss_kib() - before < 32 * 1024
    assert composer.export(composer.open_bytes(musicxml(1).encode(), "short.musicxml"), "wav").startswith(b"RIFF")


@pytest.mark.skipif(audio_problem() is not None, reason="needs FluidSynth and a SoundFont")
def test_audio_stopped_by_the_time_budget_leaves_no_files(monkeypatch, tmp_path):
    """FluidSynth runs in the render worker's process group: killed with it, and its folder removed."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the workers' temp folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    composer = Composer(output_dir=tmp_path / "exports", render_budget=RenderBudget(time_s=1))
    # 2,000 s of audio: FluidSynth on an idle core renders 800 s in under 3 s, so the budget must be far below
    with pytest.raises(ScoreError, match="rendering the WAV audio of this score took longer than the 1 s render"):
        composer.export(ScoreDocument(musicxml(1000), "long"), "wav")
    assert [p.name for p in tmp_path.iterdir()] == []
    assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
                .splitlines() if line.startswith("fluidsynth") and str(tmp_path) in line]


def test_a_worker_serves_job_after_job():
    """Each job resets the worker's CPU backstop (raising a hard RLIMIT_CPU is refused, which ended it)."""
    from engine.render.engrave import Engraver

    engraver = Engraver()
    try:
        score = musicxml(300, parts=4)  # over a second of CPU each time
        pids = set()
        for _ in range(3):
            assert engraver.engrave(score).pages
            pids.add(engraver.worker_pid)
        assert len(pids) == 1
    finally:
        engraver.close()


def test_render_time_budget_stops_an_export_and_the_next_one_works():
    composer = Composer(render_budget=RenderBudget(time_s=1))
    slow = ScoreDocument(musicxml(5000, parts=8), "slow")  # 40,000 measures: about 4 s of xml2abc unbounded
    with pytest.raises(ScoreError, match=r"writing the .abc of this score took longer than the 1 s render time "
                                         r"limit .*--render-time-limit"):
        composer.export(slow, "abc")
    assert "X:1" in composer.export(composer.open_bytes(musicxml(1).encode(), "short.musicxml"), "abc").decode()


def test_render_budget_flags_are_checked():
    result = run_engine("convert", corpus_path(), "out.svg", "--render-memory-mb", "100")
    assert result.returncode == 1 and "render budget needs" in result.stderr and "256 MB" in result.stderr
    with pytest.raises(ValueError, match="at least 1 worker"):
        RenderBudget(workers=0)


def test_a_stuck_engraving_does_not_hold_up_another_one():
    """Two verovio workers (the default): while one request is stuck until its time limit, another
    score engraves on the other worker instead of waiting for the limit."""
    from engine.render.engrave import Engraver

    engraver = Engraver(RenderBudget(time_s=20))
    try:
        small = musicxml(2)
        assert engraver.engrave(small).pages
        os.kill(engraver.worker_pid, signal.SIGSTOP)  # the idle worker: the next request gets it and hangs
        stuck: list[BaseException] = []
        thread = threading.Thread(target=lambda: stuck.append(pytest.raises(ScoreError, engraver.engrave, small).value))
        started = time.monotonic()
        thread.start()
        time.sleep(1)  # the stuck request has its worker
        assert engraver.engrave(musicxml(3)).pages and thread.is_alive()
        assert time.monotonic() - started < 15
        thread.join()
        assert "longer than 20 s" in str(stuck[0])
    finally:
        engraver.close()

# --- every input the app reads exports in forms it reads back ---------------------------------------------

def _inputs() -> dict[str, bytes]:
    chorale = read_score(corpus_path().read_bytes(), "chorale.mxl").musicxml
    utf8 = chorale.replace('encoding="utf-8"', 'encoding="UTF-8"')
    return {
        "chorale.mxl": corpus_path().read_bytes(),
        "chorale.musicxml": utf8.encode(),
        "utf16.musicxml": utf8.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
        "latin1.musicxml": musicxml(declaration='<?xml version="1.0" encoding="ISO-8859-1"?>')
        .replace("<part-name>P0", "<part-name>Flûte").encode("latin-1"),
        "reel.abc": b"X:1\nT:Reel\nM:4/4\nL:1/8\nK:D\n|:DFAd fdAF|GBdg bgdB:|\n",
        "latin1.abc": "X:1\nT:Café\nM:4/4\nL:1/8\nK:D\nDFAd fdAF|GBdg bgdB|\n".encode("latin-1"),
        "utf16.abc": "X:1\nT:Café\nM:4/4\nL:1/8\nK:D\nDFAd fdAF|GBdg bgdB|\n".encode("utf-16"),
        "scale.krn": b"**kern\n*M4/4\n=1\n4c\n4d\n4e\n4f\n=2\n1g\n*-\n",
        "one-note.mid": midi(ONE_NOTE),
    }


@pytest.mark.parametrize("name", list(_inputs()))
def test_every_input_exports_and_reopens(composer, name):
    document = composer.open_bytes(_inputs()[name], name)
    assert document.musicxml.lstrip().startswith("<") and document.score().recurse().notes
    for fmt in ("musicxml", "abc", "mid"):
        data = composer.export(document, fmt)
        again = composer.open_bytes(data, f"again.{fmt}")
        assert again.n_parts == document.n_parts and again.score().recurse().notes
    exported = composer.export(document, "musicxml")
    declaration = re.match(rb"<\?xml[^>]*encoding=[\"']([^\"']+)", exported)
    assert declaration is None or declaration.group(1).lower() == b"utf-8"
    exported.decode("utf-8")


def test_utf16_musicxml_exports_as_utf8_with_a_utf8_declaration(composer):
    document = composer.open_bytes(_inputs()["utf16.musicxml"], "utf16.musicxml")
    exported = composer.export(document, "musicxml")
    assert exported.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert composer.open_bytes(exported, "again.musicxml").musicxml == document.musicxml


def test_non_utf8_abc_keeps_its_notes_and_title(composer):
    for name in ("latin1.abc", "utf16.abc"):
        document = composer.open_bytes(_inputs()[name], name)
        assert len(document.score().recurse().notes) == 16 and "Café" in document.musicxml


def test_abc_whose_music_gives_no_notes_is_refused(composer):
    with pytest.raises(ScoreError, match="no notes could be read"):
        composer.open_bytes(b'X:1\nM:4/4\nL:1/4\nK:C\n"Dear John, here are" "the notes"|\n', "odd.abc")


# --- restored sessions are read as uploads are --------------------------------------------------------------

def _saved(*texts: str, locks=()) -> dict:
    return {"versions": [{"musicxml": t, "title": f"v{i}", "action": f"Opened v{i}"} for i, t in enumerate(texts)],
            "locks": list(locks)}


def test_restore_brings_back_versions_and_locks(composer):
    from webui.handlers import restore
    from webui.session import Session

    outputs = restore(composer, Session(), _saved(musicxml(2), musicxml(3), locks=[[0, 1]]))
    assert "(restored)" in outputs.status
    assert outputs.session.history.labels() == ["1. Opened v0", "2. Opened v1"]
    assert outputs.session.document.n_measures == 3 and outputs.session.locks.cells == {(0, 1)}


def test_an_opened_or_restored_score_is_not_parsed_again_in_the_server(composer):
    """The import worker sends back the grid it checked: the server parses an accepted score only to edit it
    (a 16 x 1,000-measure score cost the server 105 MiB and 68 s when it parsed it again for the page)."""
    text = musicxml(3, parts=2)
    opened = composer.open_bytes(text.encode(), "grid.musicxml")
    (restored,) = composer.open_saved([(text, "grid")])
    for document in (opened, restored):
        assert "_parsed" not in vars(document) and (document.n_parts, document.n_measures) == (2, 3)
        assert document.grid == ScoreDocument(document.musicxml).grid


@pytest.mark.parametrize("saved, words", [
    (_saved(musicxml(100_000)), "100,000 measures"),
    (_saved('<?xml version="1.0"?><!DOCTYPE score-partwise [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<score-partwise>&x;</score-partwise>"), "entities"),
    (_saved("<score-partwise>" + " " * (21 * 2**20) + "</score-partwise>"), "the limit is 20 MiB"),
    (_saved(*[musicxml(1)] * 51), "51 versions"),
    ({"versions": [{"musicxml": 3}]}, "damaged"),
    ({"versions": "nonsense"}, "damaged"),
    (_saved(musicxml(1), locks=[[0, 0]] * 400_000), "damaged"),
])
def test_restore_refuses_what_an_upload_would(composer, saved, words):
    from webui.handlers import restore
    from webui.session import Session

    started = time.perf_counter()
    with pytest.warns(UserWarning, match=words):
        outputs = restore(composer, Session(), saved)
    assert outputs.session.document is None and "could not restore" in outputs.status
    assert time.perf_counter() - started < 15


# --- the command line ---------------------------------------------------------------------------------------

def test_cli_reading_prints_nothing_but_its_result(tmp_path):
    """music21's warnings (hundreds of lines for some Humdrum files) stay in the reader worker."""
    path = tmp_path / "scale.krn"
    path.write_bytes(_inputs()["scale.krn"])
    result = run_engine("convert", path, tmp_path / "out.musicxml")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_console_command_runs_from_any_folder(tmp_path):
    """`pip install -e .` (scripts/setup.sh) gives `notagen-engine`; installed here into a scratch prefix."""
    import sys
    import sysconfig

    from tests.conftest import ROOT

    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--prefix", str(prefix), "--editable", str(ROOT)], check=True, capture_output=True, timeout=300)
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    script = prefix / "bin" / "notagen-engine"
    run = ("import runpy, site, sys; site.addsitedir(sys.argv[1]); sys.argv = sys.argv[2:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", run, site, str(script), "check", str(corpus_path())],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert '"measures": 10' in result.stdout
