"""Model and audio faults, each injected, through the web handlers a user's click runs (issue #8).

Every fault must end in a one-line message and a usable tab: the score and history on screen stay, a
stopped generation keeps its complete bars, and a broken model file stops the app at start with one
line on stderr, never a traceback or a dead page.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import app
from engine.errors import ModelError, ScoreError
from engine.measure.inpaint import DEFAULT_CHECKPOINT, load_model
from engine.notagen import finish as notagen_finish
from engine.notagen import generate as notagen_generate
from engine.notagen.generate import NotagenGenerator
from engine.notagen.options import STOP_CANCEL
from engine.render.engrave import Engraver
from engine.render.audio import AudioUnavailable, synthesize
from engine.score.sandbox import RenderBudget
from engine.service import Composer
from tests.conftest import NOTAGEN_REFERENCE, ROOT
from webui import app as webui_app
from webui import compose_handlers as compose
from webui.handlers import render_audio
from webui.session import Session

TINY_NOTAGEN = NOTAGEN_REFERENCE / "tiny_notagen_trained_fp16.pth"
SAMPLING = {"temperature": 1.2, "top_k": 9, "top_p": 0.9}
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"


@pytest.fixture(scope="module")
def composer(notagen_reference, one_torch_thread):
    return Composer(notagen=NotagenGenerator.load(TINY_NOTAGEN), measure_model=load_model(DEFAULT_CHECKPOINT))


@pytest.fixture(scope="module")
def session(composer) -> Session:
    """A tab that already shows a score, with a lock and a clicked measure, so losses would show."""
    session = Session().with_version(composer.open_example("Bach - Chorale BWV 66.6"), "Opened chorale")
    return session.with_locks(session.locks.toggle_cell(0, 1), cursor=3)


def run_generate(composer, session, max_bars=16, seed=0, on_output=None) -> list:
    """All outputs of the Generate click (unconditional); `on_output` sees each as it streams."""
    outputs = []
    for output in compose.generate(composer, session, None, None, None, *SAMPLING.values(), seed, max_bars):
        outputs.append(output)
        if on_output:
            on_output(output)
    return outputs


def assert_kept(outputs: list, session: Session, words: str) -> None:
    """The last output reports the failure and hands back the tab's session object untouched."""
    assert outputs[-1].session is session
    assert outputs[-1].status.startswith("**Error:**") and words in outputs[-1].status
    assert "\n" not in outputs[-1].status and "Traceback" not in outputs[-1].status


def offers_musicxml(output) -> bool:
    """A finished version: its MusicXML download is made and offered (a preview's `downloads` is None)."""
    return any(str(path).endswith(".musicxml") for path in output.downloads or ())


def assert_session_intact(session: Session) -> None:
    assert len(session.history.versions) == 1 and session.document.n_measures == 10
    assert session.locks.cells == {(0, 1)} and session.cursor == 3


# ------------------------------------------------------------------ (a) output that does not convert
def _failing_finisher(*args):
    def finish(text, start, reason):
        raise ScoreError("abc2xml: unexpected token")
    return finish


@pytest.mark.parametrize("action", ["generate", "continue"])
def test_output_that_does_not_convert_keeps_the_previous_score(composer, session, monkeypatch, action):
    """Every attempt's text fails to convert (previews too): the failure is reported once all attempts
    are spent, and the tab keeps the score it had."""
    monkeypatch.setattr(notagen_generate, "finish_generated", _failing_finisher)  # the generator's pieces
    monkeypatch.setattr(notagen_finish, "finish_generated", _failing_finisher)  # the previews
    monkeypatch.setattr(notagen_finish.ScoreContinuation, "finisher", lambda self, title: _failing_finisher())
    with pytest.warns(UserWarning, match="could not be used"):
        if action == "generate":
            outputs = run_generate(composer, session, max_bars=2)
        else:
            outputs = list(compose.continue_piece(composer, session, 2, *SAMPLING.values(), 0, from_cursor=False))
    assert_kept(outputs, session, "the generated piece could not be used: the generated text does not convert")
    assert all(output.session is session for output in outputs)  # no preview ever replaced the score
    assert_session_intact(session)


# ------------------------------------------------------------------ (b) time limit, (c) cancel
def test_time_limit_keeps_the_complete_bars(composer, session, monkeypatch):
    """The generation is held after its first bar until its time limit has passed: it stops with that bar
    as a finished version (downloads made), and the earlier score stays in the history."""
    limit = 5.0
    monkeypatch.setattr(compose, "GENERATION_TIME_LIMIT", limit)
    started = time.monotonic()

    def hold_after_first_bar(output):
        if output.status.startswith("Generating: 1 bars"):
            time.sleep(max(0.0, limit - (time.monotonic() - started)) + 0.2)

    outputs = run_generate(composer, session, on_output=hold_after_first_bar)
    final = outputs[-1].session
    assert "(stopped: time)" in outputs[-1].status
    assert final.document.n_measures == 1 and final.history.can_undo
    assert final.history.versions[0].document is session.document
    assert offers_musicxml(outputs[-1])


def test_cancel_event_keeps_the_complete_bars(composer):
    """`cancel` set (any thread may) after two bars: the piece ends with exactly those two complete bars."""
    cancel = threading.Event()
    events = composer.notagen.stream(None, max_bars=16, seed=0, cancel=cancel)
    for event in events:
        if event.kind == "bar" and event.bars == 2:
            cancel.set()
        if event.kind == "done":
            break
    assert event.kind == "done" and event.stop == STOP_CANCEL and event.bars == 2
    body = [line for line in event.piece.text.splitlines(keepends=True) if line.startswith("[r:")]
    assert len(body) == 2 and all(line.endswith("\n") for line in body)
    assert event.piece.document.n_measures == 2


def test_stop_button_keeps_the_piece_so_far(composer, session):
    """The Stop button cancels the streaming handler (Gradio closes it) and shows the last piece as a full version."""
    running = compose.generate(composer, session, None, None, None, *SAMPLING.values(), 0, 16)
    preview = next(output for output in running if output.session is not session)
    running.close()
    outputs = compose.stopped(composer, preview.session)
    assert outputs.status.endswith("Stopped: kept what was made.")
    assert outputs.session.document.n_measures >= 1 and outputs.session.history.versions[0].document is session.document
    assert offers_musicxml(outputs)


# ------------------------------------------------------------------ (d) out of memory
@pytest.mark.parametrize("error", [torch.OutOfMemoryError(CUDA_OOM), RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_out_of_memory_while_generating(composer, session, monkeypatch, error):
    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(composer.notagen.model, "decode_patch", out_of_memory)
    with pytest.warns(UserWarning, match="ran out of memory"):
        outputs = run_generate(composer, session)
    assert_kept(outputs, session, "NotaGen ran out of memory")
    with pytest.warns(UserWarning, match="ran out of memory"):
        outputs = list(compose.continue_piece(composer, session, 2, *SAMPLING.values(), 0, from_cursor=False))
    assert_kept(outputs, session, "NotaGen ran out of memory")
    assert_session_intact(session)


def test_out_of_memory_mid_piece_keeps_the_bars_so_far(composer, session, monkeypatch):
    """Memory runs out after the first bar is on screen: the failure is shown, and the bars so far stay as a
    finished version (downloads made, as after Stop) after the earlier score in the history."""
    decode_patch = composer.notagen.model.decode_patch
    shown = []

    def decode_until_shown(*args, **kwargs):
        if shown:
            raise torch.OutOfMemoryError(CUDA_OOM)
        return decode_patch(*args, **kwargs)

    monkeypatch.setattr(composer.notagen.model, "decode_patch", decode_until_shown)
    with pytest.warns(UserWarning, match="ran out of memory"):
        outputs = run_generate(composer, session, on_output=lambda output: shown.append(output.session is not session))
    final = outputs[-1]
    assert "NotaGen ran out of memory" in final.status and "Kept what was made" in final.status
    assert final.session.document.n_measures == 1 and final.session.history.versions[0].document is session.document
    assert offers_musicxml(final)


def test_out_of_memory_while_inpainting(composer, session, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(composer.measure_model.context, "forward", out_of_memory)
    with pytest.warns(UserWarning, match="ran out of memory"):
        outputs = list(compose.regenerate_unlocked(composer, session, 0, 0))
    assert_kept(outputs, session, "regenerating failed: the measure model ran out of memory")
    assert_session_intact(session)


def test_other_model_errors_are_not_hidden(composer, session, monkeypatch):
    """Only memory errors become `ModelError`: a real bug still shows as itself."""
    def broken(*args, **kwargs):
        raise RuntimeError("size mismatch")

    monkeypatch.setattr(composer.notagen.model, "decode_patch", broken)
    with pytest.raises(RuntimeError, match="size mismatch") as caught:
        list(composer.generate(None, max_bars=2, seed=0))
    assert not isinstance(caught.value, ModelError)


# ------------------------------------------------------------------ (e) missing or corrupt checkpoints
def test_missing_checkpoint_stops_the_app_with_one_line():
    result = subprocess.run([sys.executable, "app.py", "--notagen-checkpoint", "/nonexistent"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: checkpoint not found: /nonexistent"]


def _garbage(path):
    path.write_bytes(bytes(range(256)) * 20)
    return path


CHECKPOINTS = {
    "notagen garbage": (lambda tmp: ["--notagen-checkpoint", str(_garbage(tmp / "model.pth"))], "is not a readable PyTorch file"),
    "notagen cut short": (lambda tmp: ["--notagen-checkpoint", str(_cut(tmp / "model.pth"))], "is not a readable PyTorch file"),
    "measure missing": (lambda tmp: ["--measure-checkpoint", str(tmp / "none")], "no measure model at"),
    "measure garbage": (lambda tmp: ["--measure-checkpoint", str(_garbage_measure(tmp))], "cannot load the measure model"),
}


def _cut(path):
    path.write_bytes(TINY_NOTAGEN.read_bytes()[:100_000])
    return path


def _garbage_measure(tmp):
    (tmp / "config.json").write_bytes((DEFAULT_CHECKPOINT / "config.json").read_bytes())
    _garbage(tmp / "model.safetensors")
    return tmp


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_corrupt_checkpoint_stops_the_app_with_one_line(case, tmp_path, capsys, notagen_reference):
    """`app.main` (what `python app.py` runs) refuses before starting the server."""
    make_args, words = CHECKPOINTS[case]
    assert app.main(make_args(tmp_path)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]


def test_app_without_models_or_audio_starts_with_those_parts_off(monkeypatch, tmp_path, session):
    """With no model loaded and no FluidSynth, the page still builds: the buttons are off, each with its
    reason on the page, and clicking anyway gives a message, not an error page."""
    monkeypatch.setenv("PATH", str(tmp_path))
    composer = Composer()
    demo = webui_app.build_app(composer)
    components = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    for button in ("generate", "continue", "regenerate-from", "inpaint", "listen"):
        assert components[button].interactive is False
    assert "--notagen-checkpoint" in components["compose-off"].value
    assert "--measure-checkpoint" in components["inpaint-off"].value
    assert "FluidSynth is not installed" in components["audio-problem"].value
    with pytest.warns(UserWarning, match="no NotaGen model is loaded"):
        assert_kept(run_generate(composer, session), session, "no NotaGen model is loaded")
    with pytest.warns(UserWarning, match="no measure model is loaded"):
        assert_kept(list(compose.regenerate_unlocked(composer, session, 0, 0)), session, "no measure model is loaded")


# ------------------------------------------------------------------ (g) verovio crashes or hangs
@pytest.fixture
def chorale_musicxml(composer) -> str:
    return composer.open_example("Bach - Chorale BWV 66.6").musicxml


def test_a_verovio_crash_fails_only_that_request(chorale_musicxml):
    """A real score that makes the pinned verovio segfault in loadData (our shipped models wrote it under
    bench/load.py): a clear error instead of a dead server, then a fresh worker engraves as before."""
    crashing = (ROOT / "tests/data/verovio_segfault.musicxml").read_text(encoding="utf-8")
    engraver = Engraver()
    try:
        assert engraver.engrave(chorale_musicxml).pages
        first = engraver.worker_pid
        with pytest.raises(ScoreError, match="crashed on this score"):
            engraver.engrave(crashing)
        assert engraver.engrave(chorale_musicxml).pages and engraver.worker_pid not in (None, first)
    finally:
        engraver.close()


def test_a_hung_engraving_is_stopped_after_its_time_limit(chorale_musicxml):
    engraver = Engraver(RenderBudget(time_s=1))
    try:
        engraver.midi(chorale_musicxml)
        hung = engraver.worker_pid
        os.kill(hung, signal.SIGSTOP)
        with pytest.raises(ScoreError, match="longer than 1 s"):
            engraver.engrave(chorale_musicxml)
        assert engraver.midi(chorale_musicxml).startswith(b"MThd") and engraver.worker_pid != hung
    finally:
        engraver.close()


def test_a_version_that_cannot_be_engraved_is_kept(composer, session, monkeypatch):
    def crashed(document):
        raise ScoreError("the engraver (verovio) crashed on this score")

    monkeypatch.setattr(composer, "engrave", crashed)
    outputs = list(compose.regenerate_unlocked(composer, session, 0, 0))[-1]
    kept = outputs.session
    assert len(kept.history.versions) == 2 and kept.history.versions[0].document is session.document
    assert "could not be engraved: the engraver (verovio) crashed" in outputs.view
    assert "This version could not be engraved" in outputs.status and offers_musicxml(outputs)
    assert_session_intact(session)


# ------------------------------------------------------------------ (f) FluidSynth or the SoundFont missing
@pytest.mark.parametrize("missing", ["fluidsynth", "soundfont"])
def test_audio_unavailable_is_explained_and_the_score_stays(composer, session, monkeypatch, tmp_path, missing):
    if missing == "fluidsynth":
        monkeypatch.setenv("PATH", str(tmp_path))
        words = "FluidSynth is not installed"
    else:
        monkeypatch.setenv("SOUNDFONT", str(tmp_path / "gone.sf2"))
        words = "gone.sf2, which is not a file"
    with pytest.raises(AudioUnavailable, match=words):
        synthesize(b"MThd", "ogg")
    with pytest.warns(UserWarning, match=words):
        outputs = render_audio(composer, session, 1.0)
    status = outputs.status
    assert status.startswith("**Error:** audio is off: ") and words in status
    assert outputs.player is None and outputs.files is None  # player, downloads stay
    assert_session_intact(session)  # the handler does not even output the session: the score stays


def test_model_audio_and_pdf_actions_share_one_concurrency_limit(composer):
    """`--concurrency N` bounds all heavy work together, not N generations plus N inpaintings plus ..."""
    demo = webui_app.build_app(composer)
    heavy = {"generate", "continue_piece", "regenerate_unlocked", "render_audio", "make_pdf"}
    ids = {}
    for block in demo.fns.values():
        name = getattr(block.fn, "__name__", None)  # None: a JavaScript-only event
        if name in heavy:
            ids.setdefault(name, set()).add(block.concurrency_id)
    assert set(ids) == heavy and {i for group in ids.values() for i in group} == {"heavy"}
