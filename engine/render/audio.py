"""Audio from MIDI with FluidSynth and a General MIDI SoundFont.

FluidSynth is called directly rather than through midi2audio, because midi2audio cannot pass the
gain, quiet and output-type flags needed here (-g 0.7 keeps dense scores from clipping; -T oga
writes Ogg Vorbis, which browsers play, without a separate encoder).
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
from functools import partial
from pathlib import Path

from engine.errors import ScoreError
from engine.tempdirs import PREFIX

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
AUDIO_FORMATS = {"ogg": "oga", "wav": "wav"}


class AudioUnavailable(ScoreError):
    """FluidSynth or a SoundFont is missing: audio is off, everything else works."""


def find_soundfont() -> Path | None:
    """The SoundFont to use: $SOUNDFONT if set, else the first installed General MIDI one."""
    configured = os.environ.get("SOUNDFONT")
    candidates = (configured,) if configured else SOUNDFONT_CANDIDATES
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def audio_problem() -> str | None:
    """Why audio cannot be rendered on this machine, or None when it can."""
    if shutil.which("fluidsynth") is None:
        return "audio is off: FluidSynth is not installed (apt-get install fluidsynth)"
    configured = os.environ.get("SOUNDFONT")
    if configured and not Path(configured).is_file():
        return f"audio is off: SOUNDFONT is set to {configured}, which is not a file"
    if find_soundfont() is None:
        return "audio is off: no SoundFont found (apt-get install timgm6mb-soundfont, or set SOUNDFONT)"
    return None


def synthesize(midi: bytes, fmt: str = "ogg", tempo: float = 1.0, memory_mb: int | None = None,
               timeout_s: float = 120.0) -> bytes:
    """Render MIDI bytes, played `tempo` times as fast, to Ogg Vorbis or WAV bytes.

    With `memory_mb` (the render memory limit, what a render worker runs under: FluidSynth inherits its
    RLIMIT_AS) the file may be at most a quarter of it, since the worker holds it twice over while sending
    it back; a FluidSynth that cannot allocate raises MemoryError, which the worker reports as the limit."""
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}")
    problem = audio_problem()
    if problem:
        raise AudioUnavailable(problem)
    if tempo != 1.0:
        from engine.render.engrave import scale_tempo

        midi = scale_tempo(midi, tempo)
    # named as the app's temp folders are, so that one left by a killed render worker is found and removed
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}synth-{os.getpid()}-") as tmp:
        midi_path = Path(tmp) / "in.mid"
        out_path = Path(tmp) / f"out.{fmt}"
        midi_path.write_bytes(midi)
        command = [
            "fluidsynth", "-ni", "-q", "-g", "0.7", "-r", "44100",
            "-F", str(out_path), "-T", AUDIO_FORMATS[fmt], str(find_soundfont()), str(midi_path),
        ]
        max_bytes = None if memory_mb is None else memory_mb * 2**20 // 4
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False,
                                    preexec_fn=None if max_bytes is None else partial(_limit_file_size, max_bytes))
        except subprocess.TimeoutExpired as exc:
            raise ScoreError(f"FluidSynth took longer than {timeout_s:.0f} s and was stopped") from exc
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        if result.returncode == -signal.SIGXFSZ:
            raise ScoreError(f"the {fmt.upper()} audio of this score would be larger than {max_bytes // 2**20} MB, "
                             "a quarter of the render memory limit (--render-memory-mb), and was stopped")
        if result.returncode != 0 and any("Cannot allocate memory" in line for line in detail):
            raise MemoryError("FluidSynth could not allocate memory")
        if result.returncode != 0 or not out_path.is_file() or out_path.stat().st_size == 0:
            raise ScoreError("FluidSynth failed" + (f": {detail[-1]}" if detail else ""))
        return out_path.read_bytes()


def _limit_file_size(max_bytes: int) -> None:
    """In FluidSynth's process before it starts: writing past `max_bytes` ends it with SIGXFSZ."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
