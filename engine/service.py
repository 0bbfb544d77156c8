"""The one facade the UI and the command line call: its methods are the user's verbs.

`Composer` owns the engraver and the caches of derived artefacts (engravings, audio, exports), keyed
by the document's content hash and bounded in size, so repeated renders of the same version are free.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterator

from engine.errors import ModelError, ScoreError
from engine.history import History
from engine.render.audio import AUDIO_FORMATS, AudioUnavailable, audio_problem
from engine.render.engrave import Engraver, Engraving
from engine.score.document import ScoreDocument
from engine.score.examples import EXAMPLES, load_example
from engine.score.formats import MAX_FILE_BYTES, read_file_bytes
from engine.score.sandbox import ImportBudget, RenderBudget, Sandbox
from engine.tempdirs import make_temp_dir, remove_stale

@dataclass(frozen=True)
class Progress:
    """A step of a streamed generation: the piece so far (None between previews) and whether it ended."""

    bars: int
    seconds: float
    document: ScoreDocument | None
    done: bool = False
    stop: str | None = None
    warnings: tuple[str, ...] = ()
    """With `done`: lines naming the kept measures of a continued score that changed (`GeneratedPiece.warnings`)."""


SHIPPED = "shipped"
"""`Composer.from_checkpoints`' choice of the model shipped in assets/ (when there is one)."""

EXPORT_FORMATS = ("musicxml", "abc", "interleaved.abc", "mid", "ogg", "wav", "svg", "pdf")
MAX_SAVED_VERSIONS = History.limit
"""Versions a restored session may bring back: as many as a `History` keeps."""
MAX_SAVED_CHARS = MAX_FILE_BYTES
"""All of a restored session's MusicXML together: no more than one upload may be."""


class _LruCache:
    """A small thread-safe LRU map: bounded memory however many versions a session makes."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key, make: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value


class Composer:
    """Open, render, listen to and export scores (engraving runs in a verovio worker process)."""

    def __init__(
        self,
        cache_size: int = 64,
        output_dir: str | Path | None = None,
        notagen=None,
        prompts: tuple = (),
        measure_model=None,
        max_export_folders: int = 64,
        import_budget: ImportBudget = ImportBudget(),
        render_budget: RenderBudget = RenderBudget(),
    ) -> None:
        """`notagen` is an `engine.notagen.generate.NotagenGenerator` (None: composing is off),
        `prompts` the `Prompt`s it was fine-tuned on, and `measure_model` an `engine.measure` model
        (None: inpainting is off). `export_file` keeps the `max_export_folders` most recently used
        version folders; a temporary `output_dir` made here is removed when the composer goes (and those of
        processes that died without removing theirs, when one is made). Every file a user gives is read in a
        worker within `import_budget` (`engine.score.sandbox`); engraving, audio and exports run in workers
        within `render_budget`."""
        self._engraver = Engraver(render_budget)
        self._cache = _LruCache(cache_size)
        self._sandbox = Sandbox(import_budget)
        self._renderer = Sandbox(render_budget)
        for worker in (self._sandbox, self._renderer, self._engraver):
            weakref.finalize(self, worker.close)
        if output_dir is None:
            remove_stale()
            output_dir = make_temp_dir("app")
            weakref.finalize(self, shutil.rmtree, output_dir, ignore_errors=True)
        self.output_dir = Path(output_dir)
        self.max_export_folders = max_export_folders
        self._files_lock = threading.Lock()
        self.notagen = notagen
        self.prompts = tuple(prompts)
        self.measure_model = measure_model

    @classmethod
    def from_checkpoints(cls, notagen: str | Path | None = SHIPPED, measure: str | Path | None = SHIPPED,
                         notes: list[str] | None = None, device: str = "cpu", weights: str = "fp32",
                         **options) -> Composer:
        """A composer with its models loaded: for each, a checkpoint path, `SHIPPED` for the model in
        assets/ (left out, with a line in `notes`, when none is shipped), or None for no model. A
        checkpoint that does not load raises `ModelError`. NotaGen runs on `device` ("auto": CUDA when
        present) in the `weights` format (`engine.notagen.quantize.WEIGHTS`). `options` go to the constructor."""
        generator, prompts = cls._load_notagen(notagen, notes, device, weights)
        return cls(notagen=generator, prompts=prompts, measure_model=cls._load_measure(measure, notes), **options)

    @staticmethod
    def _load_notagen(checkpoint, notes: list[str] | None, device: str, weights: str) -> tuple:
        from engine.notagen.generate import DEFAULT_MODEL_DIR, NotagenGenerator
        from engine.notagen.prompts import prompts_for_checkpoint

        if checkpoint is None:
            return None, ()
        if checkpoint == SHIPPED:
            if not (DEFAULT_MODEL_DIR / "config.json").is_file():
                _note(notes, "no NotaGen model in assets/notagen/; composing is off")
                return None, ()
            checkpoint = DEFAULT_MODEL_DIR
        return NotagenGenerator.load(checkpoint, device=device, weights=weights), tuple(prompts_for_checkpoint(checkpoint))

    @staticmethod
    def _load_measure(checkpoint, notes: list[str] | None):
        from engine.measure.inpaint import DEFAULT_CHECKPOINT, load_model

        if checkpoint is None:
            return None
        if checkpoint == SHIPPED:
            if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
                _note(notes, "no measure model in assets/measure/; inpainting is off")
                return None
            checkpoint = DEFAULT_CHECKPOINT
        return load_model(checkpoint)

    examples = tuple(EXAMPLES)

    def warm_up(self) -> None:
        """Start a file reader worker and an engraving worker now, so that the first upload does not wait
        for one (about 1 s), nor the first score shown (a generated piece's first bar) for the other
        (0.2-0.5 s)."""
        self._sandbox.warm()
        self._engraver.warm()

    def open_file(self, path: str | Path) -> ScoreDocument:
        path = Path(path)
        return self.open_bytes(read_file_bytes(path), path.name)

    def open_bytes(self, data: bytes, filename: str) -> ScoreDocument:
        """A user's file, read in a worker within the import budget; the extension chooses the reader."""
        ((musicxml, grid),) = self._sandbox.read([(data, filename)])
        return ScoreDocument.with_grid(musicxml, Path(filename).stem, grid)

    def open_saved(self, versions: list[tuple[str, str]]) -> list[ScoreDocument]:
        """Documents from the (MusicXML, title) pairs of a session the browser kept: read as uploads are,
        all within one import budget, the whole no larger than one upload."""
        if len(versions) > MAX_SAVED_VERSIONS:
            raise ScoreError(f"the saved session has {len(versions)} versions; the limit is {MAX_SAVED_VERSIONS}")
        size = sum(len(musicxml) for musicxml, _ in versions)
        if size > MAX_SAVED_CHARS:
            raise ScoreError(f"the saved session is {size / 2**20:.1f} MiB; the limit is {MAX_SAVED_CHARS // 2**20} MiB")
        files = [(musicxml.encode("utf-8"), f"saved version {i + 1}.musicxml") for i, (musicxml, _) in enumerate(versions)]
        return [ScoreDocument.with_grid(musicxml, title[:200], grid)
                for (musicxml, grid), (_, title) in zip(self._sandbox.read(files), versions)]

    def open_example(self, title: str) -> ScoreDocument:
        if title not in EXAMPLES:
            raise ScoreError(f"unknown example {title!r}")
        return self._cache.get_or_make(("example", title), lambda: load_example(title))

    def engrave(self, document: ScoreDocument) -> Engraving:
        return self._cache.get_or_make(
            ("engrave", document.digest), lambda: self._engraver.engrave(document.musicxml)
        )

    def measure_onsets(self, document: ScoreDocument) -> tuple[tuple[float, str], ...]:
        """When each engraved measure starts in the audio (ms at tempo 1, measure id)."""
        return self._cache.get_or_make(
            ("onsets", document.digest), lambda: self._engraver.measure_onsets(document.musicxml)
        )

    @property
    def audio_problem(self) -> str | None:
        """Why audio is off on this machine (shown in the UI), or None."""
        return audio_problem()

    def export(self, document: ScoreDocument, fmt: str, tempo: float = 1.0) -> bytes:
        """The document as bytes in one of `EXPORT_FORMATS`; `tempo` scales MIDI and audio speed."""
        if fmt not in EXPORT_FORMATS:
            raise ScoreError(f"cannot write .{fmt} (use one of {', '.join(EXPORT_FORMATS)})")
        return self._cache.get_or_make((fmt, document.digest, tempo), lambda: self._export(document, fmt, tempo))

    def export_warnings(self, document: ScoreDocument, fmt: str) -> tuple[str, ...]:
        """Lines saying what `export(document, fmt)` cannot carry of the score: for ABC, the part-measures
        whose notes NotaGen's notation changes (`engine.score.notation_losses`); none for other formats."""
        if fmt not in ("abc", "interleaved.abc"):
            return ()
        from engine.score.notation_losses import export_losses

        return self._cache.get_or_make(("losses", fmt, document.digest),
                                       lambda: tuple(export_losses(document, fmt == "interleaved.abc")))

    def export_file(self, document: ScoreDocument, fmt: str, tempo: float = 1.0) -> Path:
        """`export` written to the output folder as `<title>.<fmt>`, one folder per version.

        The folders form an LRU bounded by `max_export_folders`, so a long-running app's disk use is bounded."""
        folder = self.output_dir / f"{document.digest}-{tempo:g}"
        path = folder / f"{_file_stem(document.title)}.{fmt}"
        with self._files_lock:
            if path.is_file():
                os.utime(folder)
                return path
        data = self.export(document, fmt, tempo)
        with self._files_lock:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(data)
            partial.replace(path)
            os.utime(folder)
            folders = sorted((p for p in self.output_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
            for old in folders[: -self.max_export_folders]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def _export(self, document: ScoreDocument, fmt: str, tempo: float) -> bytes:
        """Everything but the MusicXML is written in a worker within the render budget."""
        if fmt == "musicxml":
            return document.musicxml.encode("utf-8")
        what = f"writing the .{fmt} of this score"
        if fmt in ("abc", "interleaved.abc"):
            abc = self._renderer.run("engine.score.document:export_abc", (document.musicxml, fmt != "abc"), what)
            return (abc if fmt != "abc" else _without_repeated_titles(abc)).encode("utf-8")
        if fmt == "svg":
            return self._engraver.svg(document.musicxml).encode("utf-8")
        if fmt == "pdf":
            from engine.render.pdf import A4_LAYOUT, with_header

            pages = self._engraver.engrave(with_header(document.musicxml, document.title), **A4_LAYOUT).pages
            return self._renderer.run("engine.render.pdf:svg_pages_to_pdf", (pages,), what)
        midi = self._engraver.midi(document.musicxml)
        if fmt in AUDIO_FORMATS:
            problem = audio_problem()  # said here, as it is, rather than as a failed job
            if problem:
                raise AudioUnavailable(problem)
            memory_mb = self._renderer.budget.memory_mb
            return self._renderer.run("engine.render.audio:synthesize", (midi, fmt, tempo, memory_mb),
                                      f"rendering the {fmt.upper()} audio of this score")
        return midi if tempo == 1.0 else self._renderer.run("engine.render.engrave:scale_tempo", (midi, tempo), what)

    def generate(self, prompt, preview_every: int = 4, **options) -> Iterator[Progress]:
        """Stream one new piece from a `Prompt` (None: unconditional), with a preview every few bars."""
        from engine.notagen.finish import finish_generated

        generator = self._require_notagen()
        preview = finish_generated("preview")
        return self._progress(generator.stream(prompt, n=1, **options), preview, preview_every)

    def continue_score(
        self, document: ScoreDocument, bars: int, keep: int | None = None, preview_every: int = 4, **options
    ) -> Iterator[Progress]:
        """Stream `document`'s first `keep` bars (default: all) followed by `bars` new ones."""
        from engine.notagen.finish import score_continuation

        generator = self._require_notagen()
        continuation = score_continuation(document, bars, keep)
        events = generator.stream_continuation(document, bars, keep=keep, n=1, **options)
        return self._progress(events, continuation.finisher(document.title), preview_every,
                              start=len(continuation.context.text))

    def compose(self, prompt, n: int = 1, *, on_event=None, **options):
        """`n` whole pieces from a `Prompt` (None: unconditional), generated together: a
        `GenerationResult`; `on_event` sees every bar and failure (progress)."""
        return self._require_notagen().generate(prompt, n=n, on_event=on_event, **options)

    def compose_continuation(self, document: ScoreDocument, bars: int | None, keep: int | None = None, *,
                             prompt=None, on_event=None, **options):
        """`document`'s first `keep` bars (default: all) followed by `bars` new ones (default: as many as
        the document had after `keep`, i.e. regenerate from bar `keep`): a `GenerationResult`, whose
        `warnings` name the kept measures changed to close a spanner cut at the last kept bar."""
        generator = self._require_notagen()
        if bars is None:
            return generator.regenerate_from(document, keep, prompt=prompt, on_event=on_event, **options)
        return generator.continue_document(document, bars, keep=keep, prompt=prompt, on_event=on_event, **options)

    def inpaint(self, document: ScoreDocument, locked_cells, **options):
        """`Rewritten`: `document` with every (part, column) cell not in `locked_cells` rewritten by the
        measure model, and the cells whose lyrics went (`.warnings` says so);
        `options` are `engine.measure.inpaint.inpaint`'s (seed, temperature, sweeps, time_budget_s, ...)."""
        from engine.measure.inpaint import inpaint

        if self.measure_model is None:
            raise ModelError("no measure model is loaded (app: --measure-checkpoint DIR; command line: --checkpoint DIR)")
        return inpaint(document, set(locked_cells), model=self.measure_model, **options)

    def evaluate(self, encoder: str | Path, data: str | Path, out: str | Path, prompts=None, **options) -> dict:
        """The NotaGen paper's Table 2 for the loaded NotaGen model (`engine.scoring.evaluate.evaluate`)."""
        from engine.scoring.evaluate import evaluate

        return evaluate(self._require_notagen(), encoder, data, out, prompts, **options)

    def _require_notagen(self):
        if self.notagen is None:
            raise ModelError("no NotaGen model is loaded (app: --notagen-checkpoint PATH; command line: --checkpoint PATH)")
        return self.notagen

    @staticmethod
    def _progress(events, preview, preview_every: int, start: int = 0) -> Iterator[Progress]:
        """Events -> progress: previews converted every `preview_every` bars, then the finished piece."""
        for event in events:
            if event.kind == "done":
                yield Progress(event.bars, event.elapsed, event.piece.document, done=True, stop=event.stop,
                               warnings=event.piece.warnings)
                return
            if event.kind == "failed" and not event.will_retry:
                raise ModelError(f"the generated piece could not be used: {event.reason}")
            document = None
            if event.kind == "bar" and (event.bars == 1 or event.bars % preview_every == 0):
                try:
                    document = preview(event.text, start, "preview")[1]
                except ScoreError:
                    document = None  # a preview that does not convert yet; the next one may
            yield Progress(event.bars, event.elapsed, document)

    def check(self, document: ScoreDocument) -> dict:
        """Measure and part count of the document, and the bar count and bar alignment error of its NotaGen
        text: ABC bars may outnumber measures (a repeat sign inside a measure ends an ABC bar)."""
        from engine.score.bae import bar_alignment

        alignment = bar_alignment(self.export(document, "interleaved.abc").decode("utf-8"))  # written in a worker
        return {"measures": document.n_measures, "parts": document.n_parts, "abc_bars": alignment.bars,
                "bae": alignment.rate}


def _note(notes: list[str] | None, line: str) -> None:
    if notes is not None:
        notes.append(line)


def _without_repeated_titles(abc: str) -> str:
    """xml2abc writes a `T:` line for the title and for every credit, and a score repeats its credits on
    each page (a quartet's footer came out 30 times): the header keeps each `T:`, `C:` and `Z:` line once."""
    lines = abc.split("\n")
    header_end = next((i for i, line in enumerate(lines) if line.startswith("K:")), len(lines))
    seen: set[str] = set()
    header = []
    for line in lines[:header_end]:
        if line[:2] in ("T:", "C:", "Z:"):
            if line in seen:
                continue
            seen.add(line)
        header.append(line)
    return "\n".join(header + lines[header_end:])


def _file_stem(title: str) -> str:
    """A safe file name from a score title: letters, digits, dot, dash and underscore only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("._")
    return stem[:80] or "score"
