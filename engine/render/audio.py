"""Audio from MIDI with FluidSynth and a General MIDI SoundFont.

FluidSynth is called directly rather than through midi2audio, because midi2audio cannot pass the
gain, quiet and output-type flags needed here (-g 0.7 keeps dense scores from clipping; -T oga
writes Ogg Vorbis, which browsers play, without a separate encoder).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from engine.errors import ScoreError

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


def synthesize(midi: bytes, fmt: str = "ogg", timeout_s: float = 120.0) -> bytes:
    """Render MIDI bytes to Ogg Vorbis or WAV bytes."""
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}")
    problem = audio_problem()
    if problem:
        raise AudioUnavailable(problem)
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        midi_path = Path(tmp) / "in.mid"
        out_path = Path(tmp) / f"out.{fmt}"
        midi_path.write_bytes(midi)
        command = [
            "fluidsynth", "-ni", "-q", "-g", "0.7", "-r", "44100",
            "-F", str(out_path), "-T", AUDIO_FORMATS[fmt], str(find_soundfont()), str(midi_path),
        ]
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ScoreError(f"FluidSynth took longer than {timeout_s:.0f} s and was stopped") from exc
        if result.returncode != 0 or not out_path.is_file() or out_path.stat().st_size == 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise ScoreError("FluidSynth failed" + (f": {detail[-1]}" if detail else ""))
        return out_path.read_bytes()
