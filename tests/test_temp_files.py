"""Temporary files stay bounded (issue #8): exports, audio rendering and Gradio's upload cache."""
from __future__ import annotations

import gc
import os
import tempfile

import pytest

from engine.render.audio import audio_problem, synthesize
from engine.score.document import ScoreDocument
from engine.score.formats import read_score_file
from engine.service import Composer
from tests.helpers import corpus_path


def _disk_use(folder) -> tuple[int, int]:
    """(version folders, bytes) under an export folder."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(1 for p in folder.iterdir() if p.is_dir()), sum(p.stat().st_size for p in files)


def test_repeated_exports_keep_disk_use_bounded(tmp_path):
    chorale = read_score_file(corpus_path())
    composer = Composer(output_dir=tmp_path, max_export_folders=5)
    versions = [ScoreDocument(chorale.musicxml + f"<!-- version {i} -->", "Chorale") for i in range(40)]
    paths = [composer.export_file(version, fmt) for version in versions for fmt in ("musicxml", "abc")]
    folders, size = _disk_use(tmp_path)
    assert folders == 5 and size <= 5 * 2 * (len(chorale.musicxml) + 200) + len(chorale.abc) * 5
    assert all(p.is_file() for p in paths[-10:]) and not paths[0].exists()
    assert not list(tmp_path.rglob("*.part"))


def test_reused_export_is_kept_as_recently_used(tmp_path):
    chorale = read_score_file(corpus_path())
    composer = Composer(output_dir=tmp_path, max_export_folders=3)
    first = ScoreDocument(chorale.musicxml, "First")
    kept = composer.export_file(first, "musicxml")
    for i in range(6):
        composer.export_file(first, "musicxml")  # the user downloads it again: it stays
        composer.export_file(ScoreDocument(chorale.musicxml + f"<!-- {i} -->", "Other"), "musicxml")
    assert kept.is_file() and _disk_use(tmp_path)[0] == 3


def test_composer_removes_its_own_temporary_folder():
    composer = Composer()
    composer.export_file(read_score_file(corpus_path()), "musicxml")
    folder = composer.output_dir
    assert folder.is_dir()
    del composer
    gc.collect()
    assert not folder.exists()


@pytest.mark.skipif(audio_problem() is not None, reason="FluidSynth or a SoundFont is missing")
def test_audio_rendering_leaves_no_files(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    midi = Composer(output_dir=tmp_path / "exports").export(read_score_file(corpus_path()), "mid")
    assert synthesize(midi, "ogg").startswith(b"OggS")
    assert not list(tmp_path.iterdir())


def test_app_cleans_gradio_uploads_and_download_copies(tmp_path):
    from webui.app import GRADIO_CACHE_CLEANUP, build_app

    frequency, age = GRADIO_CACHE_CLEANUP
    assert build_app(Composer(output_dir=tmp_path)).delete_cache == (frequency, age) and 0 < frequency <= age


def test_temp_folders_of_dead_processes_are_removed_at_the_next_start(tmp_path, monkeypatch):
    import subprocess
    import sys

    from engine.tempdirs import make_temp_dir, remove_stale

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"notagen-app-{int(dead.stdout)}-x1"
    (stale / "v1").mkdir(parents=True)
    live = make_temp_dir("app")
    other = tmp_path / "notagen-notes"  # not named by a process: not this app's
    other.mkdir()
    assert live.name.startswith(f"notagen-app-{os.getpid()}-")
    assert remove_stale() == [stale]
    assert not stale.exists() and live.is_dir() and other.is_dir()


def test_sigterm_removes_the_temp_folders(tmp_path):
    """A stopped process (the CLI, the server: both call `exit_on_sigterm`) cleans up as at a normal exit."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("from engine.tempdirs import exit_on_sigterm\nfrom engine.service import Composer\nimport time\n"
              "exit_on_sigterm()\nc = Composer()\nprint(c.output_dir, flush=True)\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    folder = process.stdout.readline().strip()
    assert folder.startswith(str(tmp_path)) and os.path.isdir(folder)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM
    assert not list(tmp_path.iterdir())
