"""Where and in what number format the models run: the `--device` and `--weights` choices of the app, the
command line and the trainers. Torch is imported only to resolve a device, so the choices load without it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import ModelError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
#: NotaGen's weight formats (`engine.notagen.quantize`); auto: bf16 on CUDA, fp32 on the CPU.
WEIGHTS = ("auto", "fp32", "bf16", "fp16", "int8")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`: the CUDA GPU when torch sees one, else the CPU. Asking for `cuda` without one is an error
    rather than a silent fall-back, so a user who wants the GPU learns that it is not used."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA GPU here (a CPU-only torch build, or no driver)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {name!r} (use one of {', '.join(DEVICES)})") from exc


def app_threads() -> int:
    """Torch's CPU threads in the app: every core but one, at most 8. The browser, the server and the
    engraving workers run beside the model, and torch's default (every core) then made OpenMP's threads
    wait on each other: on a loaded 2-core machine a first bar took 4.3-21.9 s with 2 threads and
    0.5-0.8 s with 1 (`bench/first_bar.py --threads N`, docs/performance.md)."""
    import os

    return max(1, min(8, (os.cpu_count() or 1) - 1))
