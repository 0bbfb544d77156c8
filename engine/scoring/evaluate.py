"""The objective evaluation of the NotaGen paper (Table 2) for one model and a set of prompts.

For each prompt, `n` pieces are generated (one attempt each, no bar resampling: the raw model) and
scored against the prompt's reference pieces (the fine-tuning set built by `training.data`):

* ACS: mean CLaMP score, the cosine of each piece's feature with the mean feature of the prompt's
  training-split reference pieces;
* LA: how often linear classifiers on features (trained on the training split, their own accuracy
  measured on the test split) give the prompt's period and instrumentation;
* BAE: misaligned bars / bars of the converted pieces, in percent as in the paper;
* PPL: per-character perplexity of the model on the validation split (prompt lines + original key);
* convert: share of generated pieces that convert to a score (MusicXML).

The same metrics for the reference test pieces themselves form the paper's "sheet-GT" row.

The reference comes from a built data set (`ReferenceSet.build`) or, without one, from the small
reference shipped beside the encoder (`ReferenceSet.load`: features and labels, no texts, so no PPL),
written by `python -m engine.scoring.reference`.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from engine.errors import ModelError
from engine.notagen.model import NotagenModel
from engine.notagen.patchilizer import Patchilizer
from engine.score.bae import bar_alignment
from engine.score.notagen_abc import Key2index, Mode2Key
from engine.scoring.metrics import LinearProbe, clamp_scores, instrument_staves_adjacent, max_similarity
from engine.scoring.model import MusicEncoder

PLAGIARISM_THRESHOLD = 0.95
SHIPPED_REFERENCE = Path(__file__).resolve().parents[2] / "assets" / "m3"
"""The folder of the shipped encoder and of its reference (`reference.json` + `reference.safetensors`)."""
STORED_FIELDS = ("id", "split", "prompt", "period", "instrumentation", "bars", "misaligned_bars")
"""What a saved reference keeps of each piece: everything but the texts."""


@dataclass(frozen=True)
class ReferencePiece:
    """A labelled piece of the built data set."""

    id: str
    split: str
    prompt: str
    period: str
    instrumentation: str
    bars: int
    misaligned_bars: int
    """The data builder's bar alignment counts of `interleaved`: the sheet-GT row's BAE."""
    interleaved: str | None = None
    """CLaMP 2's format: what the encoder reads (None in a saved reference, which keeps the features)."""
    text: str | None = None
    """NotaGen's fine-tuning text in the piece's original key (prompt lines first): what PPL reads (None in a
    saved reference)."""


def _original_key_text(record: dict) -> str:
    keys = record["keys"]
    key = record.get("original_key")
    key = key if key in Key2index else Mode2Key.get(key or "")
    labels = record["labels"]
    prompt_lines = f"%{labels['period']}\n%{labels['composer']}\n%{labels['instrumentation']}\n"
    return prompt_lines + keys.get(key, next(iter(keys.values())))


def load_reference(data_dir: str | Path) -> list[ReferencePiece]:
    """The labelled pieces of every complete shard of `data_dir/pieces` (see docs/datasets.md)."""
    folder = Path(data_dir) / "pieces"
    pieces = []
    for path in sorted(folder.glob("shard-*.jsonl")):
        if not path.with_suffix(".done").exists():
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if not record.get("prompt") or not record.get("keys"):
                    continue
                labels = record["labels"]
                pieces.append(ReferencePiece(record["id"], record["split"], record["prompt"], labels["period"],
                                             labels["instrumentation"], record["bars"], record["misaligned_bars"],
                                             record["interleaved"], _original_key_text(record)))
    if not pieces:
        raise ModelError(f"no labelled pieces in {folder}: build them with `python -m training.data build --out {data_dir}`")
    return pieces


def encoder_digest(encoder: MusicEncoder) -> str:
    """A short hash of the encoder's weights: the key of its cached reference features."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class ReferenceSet:
    """Reference pieces with their features, and the label probes trained on them."""

    pieces: list[ReferencePiece]
    features: torch.Tensor
    digest: str
    """`encoder_digest` of the encoder that computed the features."""
    period_probe: LinearProbe = field(init=False)
    instrumentation_probe: LinearProbe = field(init=False)

    def __post_init__(self) -> None:
        train = self.indices("train")
        self.period_probe = LinearProbe.fit(self.features[train], [self.pieces[i].period for i in train])
        self.instrumentation_probe = LinearProbe.fit(self.features[train], [self.pieces[i].instrumentation for i in train])

    @classmethod
    def build(cls, data_dir: str | Path, encoder: MusicEncoder, cache_dir: str | Path | None = None) -> ReferenceSet:
        """Loads the pieces and their features, computing features once per encoder (cached on disk)."""
        pieces = load_reference(data_dir)
        digest = encoder_digest(encoder)
        cache = Path(cache_dir or Path(data_dir) / "features") / f"{digest}.pt"
        ids = [piece.id for piece in pieces]
        if cache.exists():
            stored = torch.load(cache, map_location="cpu", weights_only=True)
            if stored["ids"] == ids:
                return cls(pieces, stored["features"], digest)
        features = encoder.features([piece.interleaved for piece in pieces])
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"ids": ids, "features": features}, cache)
        return cls(pieces, features, digest)

    def save(self, folder: str | Path) -> None:
        """Writes `reference.safetensors` (features, float16) and `reference.json` (the pieces without their
        texts, one a line, and the encoder's digest): a reference small enough to ship beside its encoder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file({"features": self.features.to(torch.float16).contiguous()},
                                    str(folder / "reference.safetensors"))
        pieces = ",\n".join(json.dumps({name: getattr(piece, name) for name in STORED_FIELDS}) for piece in self.pieces)
        (folder / "reference.json").write_text(
            f'{{"encoder_digest": {json.dumps(self.digest)},\n"pieces": [\n{pieces}\n]}}\n', encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, encoder: MusicEncoder) -> ReferenceSet:
        """The reference `save` wrote; refused when `encoder` is not the one that computed its features."""
        folder = Path(folder)
        if not (folder / "reference.json").is_file():
            raise ModelError(f"no reference features in {folder} (reference.json): pass --data DATA, a data set "
                             "built by `python -m training.data build`")
        stored = json.loads((folder / "reference.json").read_text(encoding="utf-8"))
        digest = encoder_digest(encoder)
        if stored["encoder_digest"] != digest:
            raise ModelError(f"the reference features in {folder} were computed by another encoder (digest "
                             f"{stored['encoder_digest']}, this encoder's is {digest}): pass --data DATA, or rebuild them "
                             f"with `python -m engine.scoring.reference --encoder ENCODER --data DATA --out {folder}`")
        features = safetensors.torch.load_file(str(folder / "reference.safetensors"))["features"].float()
        pieces = [ReferencePiece(**record) for record in stored["pieces"]]
        if len(pieces) != len(features):
            raise ModelError(f"{folder}: {len(pieces)} pieces in reference.json but {len(features)} features")
        return cls(pieces, features, digest)

    def indices(self, split: str | None = None, prompt: str | None = None) -> list[int]:
        return [i for i, piece in enumerate(self.pieces)
                if (split is None or piece.split == split) and (prompt is None or piece.prompt == prompt)]

    def prompt_features(self, prompt: str) -> torch.Tensor:
        """Features of the prompt's training pieces (all of its pieces when none is in training)."""
        chosen = self.indices("train", prompt) or self.indices(None, prompt)
        if not chosen:
            raise ModelError(f"no reference pieces for the prompt {prompt!r}")
        return self.features[chosen]

    def prompts(self, min_train: int = 1) -> list[str]:
        """Prompts with at least `min_train` training pieces, most pieces first."""
        counts: dict[str, int] = {}
        for i in self.indices("train"):
            counts[self.pieces[i].prompt] = counts.get(self.pieces[i].prompt, 0) + 1
        return sorted((p for p, c in counts.items() if c >= min_train), key=lambda p: (-counts[p], p))

    def label_hits(self, prompt: str, features: torch.Tensor) -> tuple[list[bool], list[bool]]:
        """Per piece: is the predicted period / instrumentation the prompt's?"""
        period, _, instrumentation = prompt.split("_")
        return ([p == period for p in self.period_probe.predict(features)],
                [p == instrumentation for p in self.instrumentation_probe.predict(features)])


@dataclass
class ScoredPiece:
    """A generated piece and its scores: what the table averages and what CLaMP-DPO ranks."""

    prompt: str
    text: str
    """NotaGen text (prompt lines, header, `[r:]` bar lines): what DPO trains on."""
    abc: str
    clamp_score: float
    max_similarity: float
    period_hit: bool
    instrumentation_hit: bool
    misaligned_bars: int
    bars: int
    staves_adjacent: bool

    def chosen_eligible(self, plagiarism: float = PLAGIARISM_THRESHOLD, max_misaligned_share: float = 0.0) -> bool:
        """May be a DPO "chosen" piece: aligned bars (the paper: all of them), adjacent staves, and not a
        near-copy of one reference piece."""
        aligned = self.misaligned_bars <= max_misaligned_share * self.bars
        return aligned and self.staves_adjacent and self.max_similarity <= plagiarism


def score_pieces(reference: ReferenceSet, encoder: MusicEncoder, prompt: str, texts: Sequence[str],
                 abcs: Sequence[str]) -> list[ScoredPiece]:
    """Scores converted pieces of one prompt (`texts` NotaGen text, `abcs` their interleaved ABC)."""
    if not abcs:
        return []
    features = encoder.features(list(abcs))
    references = reference.prompt_features(prompt)
    scores, similarity = clamp_scores(features, references), max_similarity(features, references)
    periods, instrumentations = reference.label_hits(prompt, features)
    out = []
    for i, (text, abc) in enumerate(zip(texts, abcs)):
        alignment = bar_alignment(abc)
        out.append(ScoredPiece(prompt, text, abc, float(scores[i]), float(similarity[i]), periods[i], instrumentations[i],
                               alignment.misaligned, alignment.bars, instrument_staves_adjacent(abc)))
    return out


@torch.no_grad()
def perplexity(model: NotagenModel, texts: Sequence[str], batch_size: int = 8) -> float | None:
    """Per-char perplexity over `texts` (long pieces cut to the model's context with a seeded cut)."""
    if not texts:
        return None
    patchilizer = Patchilizer(model.config.patch_size)
    rng = random.Random(0)
    total, count = 0.0, 0.0
    for start in range(0, len(texts), batch_size):
        items = [torch.tensor(patchilizer.encode_train(text, model.config.patch_length, rng=rng))
                 for text in texts[start:start + batch_size]]
        patches = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
        masks = torch.zeros(patches.shape[:2], dtype=torch.long)
        for row, item in enumerate(items):
            masks[row, : len(item)] = 1
        log_probs, counts = model.sequence_log_probs(patches.to(model.device), masks.to(model.device))
        total, count = total - float(log_probs.sum()), count + float(counts.sum())
    return math.exp(total / count)


@dataclass
class TableRow:
    """One row of the paper's Table 2 (BAE in percent; None where a metric does not apply)."""

    name: str
    k: str
    acs: float | None
    la_period: float | None
    la_instrumentation: float | None
    bae: float | None
    ppl: float | None
    convert: float | None
    pieces: int


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def model_row(name: str, k: str, scored: list[ScoredPiece], attempted: int, ppl: float | None) -> TableRow:
    """The table row of a set of scored pieces (`attempted` counts the ones that failed to convert too)."""
    bars = sum(p.bars for p in scored)
    return TableRow(name, k, _mean([p.clamp_score for p in scored]), _mean([float(p.period_hit) for p in scored]),
                    _mean([float(p.instrumentation_hit) for p in scored]),
                    100 * sum(p.misaligned_bars for p in scored) / bars if bars else None, ppl,
                    len(scored) / attempted if attempted else None, attempted)


def sheet_gt_row(reference: ReferenceSet, prompts: Sequence[str]) -> TableRow:
    """The reference test pieces of the prompts, scored like generated ones; LA is the probes' test accuracy."""
    test = [i for i in reference.indices("test") if reference.pieces[i].prompt in prompts]
    features = reference.features[test]
    scores = [float(clamp_scores(features[j:j + 1], reference.prompt_features(reference.pieces[i].prompt))[0])
              for j, i in enumerate(test)]
    bars = sum(reference.pieces[i].bars for i in test)
    misaligned = sum(reference.pieces[i].misaligned_bars for i in test)
    return TableRow("sheet-GT", "-", _mean(scores),
                    reference.period_probe.accuracy(features, [reference.pieces[i].period for i in test]),
                    reference.instrumentation_probe.accuracy(features, [reference.pieces[i].instrumentation for i in test]),
                    100 * misaligned / bars if bars else None, None, 1.0, len(test))


@dataclass(frozen=True)
class UnconvertedPiece:
    """A generated piece whose text did not convert to MusicXML: not scored, but CLaMP-DPO may reject it."""

    prompt: str
    text: str
    """NotaGen text as generated (complete lines), the same form as `ScoredPiece.text`."""
    reason: str


@dataclass
class Sample:
    """What `generate_scored` made: the scored pieces, the ones that did not convert, and how many were tried."""

    scored: list[ScoredPiece]
    unconverted: list[UnconvertedPiece]
    attempted: int


def generate_scored(generator, reference: ReferenceSet, encoder: MusicEncoder, prompts: Sequence[str], n: int,
                    max_bars: int, seed: int = 0, **sampling) -> Sample:
    """Generates `n` pieces per prompt in one batch each (one attempt, no bar resampling) and scores the
    ones that convert; the others (with at least one bar) are kept as `UnconvertedPiece`s."""
    from engine.notagen.prompts import Prompt

    sample = Sample([], [], 0)
    for index, prompt in enumerate(prompts):
        period, composer, instrumentation = prompt.split("_")

        def keep_unconverted(event, prompt=prompt) -> None:
            if event.kind == "failed" and not event.will_retry and event.bars:
                sample.unconverted.append(UnconvertedPiece(prompt, event.text, event.reason or ""))

        result = generator.generate(Prompt(period, composer, instrumentation), n=n, seed=seed + index, max_bars=max_bars,
                                    max_attempts=1, bae_resample=False, on_event=keep_unconverted, **sampling)
        sample.attempted += n
        sample.scored += score_pieces(reference, encoder, prompt, [p.text for p in result.pieces], [p.abc for p in result.pieces])
        print(f"  {prompt}: {len(result.pieces)}/{n} converted", flush=True)
    return sample


def markdown_table(rows: Sequence[TableRow], notes: Sequence[str] = ()) -> str:
    """Rows in the paper's Table 2 layout, then `notes` (what a "-" means where it is not obvious)."""
    def cell(value: float | None, digits: int, scale: float = 1.0) -> str:
        return "-" if value is None else f"{value * scale:.{digits}f}"

    lines = ["| Models & Data | K | ACS | LA Per. (%) | LA Inst. (%) | BAE (%) | PPL | converts (%) | pieces |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.name} | {row.k} | {cell(row.acs, 3)} | {cell(row.la_period, 1, 100)} | "
                     f"{cell(row.la_instrumentation, 1, 100)} | {cell(row.bae, 3)} | {cell(row.ppl, 4)} | "
                     f"{cell(row.convert, 1, 100)} | {row.pieces} |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def evaluate(generator, encoder_path: str | Path, data_dir: str | Path | None, out: str | Path,
             prompts: Sequence[str] | None = None, n: int = 8, max_bars: int = 16, seed: int = 0, k: str = "0",
             min_references: int = 5, reference_dir: str | Path | None = None, **sampling) -> dict:
    """Runs the whole evaluation of a `NotagenGenerator` and writes `out` (JSON) and `out` with `.md` (the table).
    Without `data_dir` the saved reference in `reference_dir` (default: the shipped one) is used, and PPL is not measured."""
    from engine.scoring.model import load_encoder

    started = time.perf_counter()
    encoder = load_encoder(encoder_path)
    source = Path(data_dir if data_dir is not None else reference_dir or SHIPPED_REFERENCE)
    reference = ReferenceSet.build(source, encoder) if data_dir is not None else ReferenceSet.load(source, encoder)
    prompts = list(prompts or reference.prompts(min_train=min_references))
    if not prompts:
        raise ModelError(f"no prompt has {min_references} training pieces in {source}; lower --min-references")
    sample = generate_scored(generator, reference, encoder, prompts, n, max_bars, seed, **sampling)
    scored = sample.scored
    validation = [p.text for p in reference.pieces if p.split == "validation" and p.prompt in prompts and p.text]
    notes = [] if data_dir is not None else [
        f"PPL not measured: the reference in {source} holds no piece texts; pass --data DATA (built by "
        "`python -m training.data build`) to measure it."]
    rows = [sheet_gt_row(reference, prompts),
            model_row(generator.name or "NotaGen", k, scored, sample.attempted, perplexity(generator.model, validation))]
    result = {
        "checkpoint": generator.name, "encoder": str(encoder_path), "reference": str(source), "prompts": prompts, "n": n,
        "max_bars": max_bars, "seed": seed, "sampling": sampling, "rows": [asdict(row) for row in rows], "notes": notes,
        "probe_test_accuracy": {"period": rows[0].la_period, "instrumentation": rows[0].la_instrumentation},
        "pieces": [{key: value for key, value in asdict(p).items() if key != "text"} for p in scored],
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown_table(rows, notes))
    return result
