"""CLaMP-DPO (the NotaGen paper, Algorithm 1): NotaGen learns from its own pieces, ranked by CLaMP score.

    python -m training.notagen dpo --config training/configs/notagen_dpo_ship.json

Each iteration k = 1..K, starting from the previous iteration's model (k = 1: the config's `model`):

1. generate `pieces_per_prompt` pieces for every prompt with more than `min_references` training
   pieces (one attempt, no bar resampling: the model's own output), in batches; with torchrun the
   prompts are split across ranks and the scored pieces gathered;
2. score each piece: cosine of its music-encoder feature with its prompt's mean reference feature;
3. per prompt, the top `fraction` are "chosen" and the bottom `fraction` "rejected"; a chosen piece is
   dropped when a bar's voices do not add up, an instrument's staves are not adjacent, or it is closer
   than 0.95 (cosine) to any single reference piece (plagiarism); pieces that did not convert to
   MusicXML rank below all scored ones (`reject_unconverted`, our addition for models that often fail);
4. train the model on every chosen x rejected pair of a prompt with the DPO-Positive loss (beta,
   lambda) against a frozen copy of the iteration's starting model;
5. write `iter_k/preferences.jsonl`, `iter_k/model/` (loadable by the app) and the metrics table.

The pieces generated in iteration k are also the evaluation sample of model k-1, so `metrics.md` gets
row k-1 from them; after the last iteration one more round of generation gives row K. Every iteration
leaves `iter_k/done.json`; a rerun resumes after the last finished iteration.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from engine.notagen.generate import NotagenGenerator
from engine.notagen.model import NotagenModel
from engine.notagen.patchilizer import Patchilizer
from engine.scoring.evaluate import (PLAGIARISM_THRESHOLD, ReferenceSet, Sample, ScoredPiece, TableRow, UnconvertedPiece, generate_scored,
                                     markdown_table, model_row, perplexity, sheet_gt_row)
from engine.scoring.model import MusicEncoder, load_encoder

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class DpoConfig:
    name: str = "notagen_dpo"
    model: str = "assets/notagen"
    encoder: str = "assets/m3"
    data: str = "data"
    out: str = "runs"
    iterations: int = 3
    min_references: int = 10
    pieces_per_prompt: int = 20
    max_bars: int = 16
    fraction: float = 0.1
    plagiarism: float = PLAGIARISM_THRESHOLD
    max_misaligned_share: float = 0.0
    """Share of misaligned bars a chosen piece may have; the paper's check allows none."""
    beta: float = 0.1
    lam: float = 10.0
    lr: float = 1e-6
    epochs: int = 1
    max_pairs_per_prompt: int = 64
    seed: int = 0
    threads: int = 1
    model_prompts_only: bool = True
    """Only prompts in the model's own prompts.txt (its fine-tuning prompts), when it has one."""
    reject_unconverted: bool = True
    """Pieces whose text does not convert to MusicXML rank below every scored piece, so they are the first
    "rejected" ones. The paper's model nearly always converts (then this changes nothing); a small model
    often does not, and ranking only the converted pieces lets DPO trade conversion away for CLaMP score."""


def read_config(path: str | Path, overrides: dict | None = None) -> DpoConfig:
    """The config file's settings with `overrides`; keys starting with "_" are comments, as in the trainers' configs."""
    raw = json.loads(Path(path).read_text()) | (overrides or {})
    return DpoConfig(**{key: value for key, value in raw.items() if not key.startswith("_")})


def dpop_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
              ref_rejected: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """DPO-Positive (Pal et al. 2024): DPO plus a penalty when the chosen piece becomes *less* likely
    than under the reference model, which plain DPO allows as long as the rejected one drops faster."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    penalty = torch.clamp(ref_chosen - policy_chosen, min=0)
    return -F.logsigmoid(beta * (margin - lam * penalty)).mean()


def preference_pairs(scored: list[ScoredPiece], fraction: float, max_pairs: int, rng: random.Random,
                     plagiarism: float = PLAGIARISM_THRESHOLD, max_misaligned_share: float = 0.0,
                     unconverted: list[UnconvertedPiece] = ()) -> list[dict]:
    """Chosen x rejected pairs per prompt: top / bottom `fraction` by CLaMP score, chosen ones filtered.

    `unconverted` pieces rank below every scored one (rejected first; their `rejected_score` is None)."""
    pairs = []
    for prompt in sorted({p.prompt for p in scored}):
        ranked = sorted((p for p in scored if p.prompt == prompt), key=lambda p: p.clamp_score, reverse=True)
        failed = [(u.text, None) for u in unconverted if u.prompt == prompt]
        count = max(1, math.ceil(fraction * (len(ranked) + len(failed))))
        if len(ranked) + len(failed) < 2 * count:
            continue
        chosen = [p for p in ranked[:count] if p.chosen_eligible(plagiarism, max_misaligned_share)]
        bottom = ([(p.text, p.clamp_score) for p in ranked] + failed)[-count:]
        group = [(c, r) for c in chosen for r in bottom]
        rng.shuffle(group)
        pairs += [{"prompt": prompt, "chosen": c.text, "rejected": text, "chosen_score": c.clamp_score,
                   "rejected_score": score} for c, (text, score) in group[:max_pairs]]
    return pairs


def _log_probs(model: NotagenModel, texts: list[str], patches_of: dict[str, torch.Tensor]) -> torch.Tensor:
    items = [patches_of[text] for text in texts]
    patches = torch.nn.utils.rnn.pad_sequence(items, batch_first=True).to(model.device)
    masks = torch.zeros(patches.shape[:2], dtype=torch.long, device=model.device)
    for row, item in enumerate(items):
        masks[row, : len(item)] = 1
    return model.sequence_log_probs(patches, masks)[0]


def train_on_pairs(policy: NotagenModel, pairs: list[dict], config: DpoConfig, rng: random.Random) -> dict:
    """DPOP on the pairs, one pair per step; the reference is a frozen copy of the starting policy."""
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    patchilizer = Patchilizer(policy.config.patch_size)
    cut = random.Random(config.seed)  # one fixed stream cut per text, shared by policy and reference
    texts = {text for pair in pairs for text in (pair["chosen"], pair["rejected"])}
    patches_of = {text: torch.tensor(patchilizer.encode_train(text, policy.config.patch_length, rng=cut))
                  for text in sorted(texts)}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    policy.train()
    losses, margins = [], []
    for _ in range(config.epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for index in order:
            pair = pairs[index]
            both = [pair["chosen"], pair["rejected"]]
            with torch.no_grad():
                ref_chosen, ref_rejected = _log_probs(reference, both, patches_of)
            policy_chosen, policy_rejected = _log_probs(policy, both, patches_of)
            loss = dpop_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, config.beta, config.lam)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            margins.append(((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)).item())
    policy.eval()
    return {"pairs": len(pairs), "steps": len(losses), "mean_loss": sum(losses) / len(losses) if losses else None,
            "final_margin": sum(margins[-len(pairs):]) / len(pairs) if pairs else None}


def _gather(sample: Sample) -> Sample:
    """Every rank's pieces on every rank (torchrun); unchanged in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return sample
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, sample)
    return Sample([p for part in gathered for p in part.scored], [u for part in gathered for u in part.unconverted],
                  sum(part.attempted for part in gathered))


def _rank_share(prompts: list[str]) -> list[str]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return prompts
    return prompts[torch.distributed.get_rank()::torch.distributed.get_world_size()]


class DpoRun:
    """The iterations of one run directory, resumable at any finished iteration."""

    def __init__(self, config: DpoConfig) -> None:
        self.config = config
        self.dir = ROOT / config.out / config.name if not Path(config.out).is_absolute() else Path(config.out) / config.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.encoder: MusicEncoder = load_encoder(_resolve(config.encoder))
        self.reference = ReferenceSet.build(_resolve(config.data), self.encoder)
        self.prompts = self.reference.prompts(min_train=config.min_references + 1)
        known = self.model_dir(0) / "prompts.txt"
        if config.model_prompts_only and known.is_file():
            trained = {line.split("\t")[0] for line in known.read_text(encoding="utf-8").splitlines() if line.strip()}
            self.prompts = [p for p in self.prompts if p in trained]
        if not self.prompts:
            raise SystemExit(f"no prompt has more than {config.min_references} training pieces")
        self.validation = [p.text for p in self.reference.pieces if p.split == "validation" and p.prompt in self.prompts]
        self.rows: list[TableRow] = [sheet_gt_row(self.reference, self.prompts)]

    def model_dir(self, k: int) -> Path:
        return _resolve(self.config.model) if k == 0 else self.dir / f"iter_{k}" / "model"

    def sample(self, k: int) -> Sample:
        """Generates and scores the pieces of model k (the data of iteration k+1 and row k of the table)."""
        generator = NotagenGenerator.load(self.model_dir(k))
        sample = _gather(generate_scored(generator, self.reference, self.encoder, _rank_share(self.prompts),
                                         self.config.pieces_per_prompt, self.config.max_bars, seed=self.config.seed + 1000 * k))
        scored = sample.scored
        self.rows.append(model_row("NotaGen", str(k), scored, sample.attempted, perplexity(generator.model, self.validation)))
        self.write_table()
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            with open(self.dir / f"samples_{k}.jsonl", "w", encoding="utf-8") as handle:
                for piece in scored:
                    handle.write(json.dumps({key: value for key, value in dataclasses.asdict(piece).items() if key != "text"}) + "\n")
        return sample

    def write_table(self) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        (self.dir / "metrics.md").write_text(markdown_table(self.rows))
        (self.dir / "metrics.json").write_text(json.dumps([dataclasses.asdict(r) for r in self.rows], indent=1) + "\n")

    def run(self) -> Path:
        config = self.config
        torch.set_num_threads(config.threads)
        main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        rng = random.Random(config.seed)
        for k in range(1, config.iterations + 1):
            iteration = self.dir / f"iter_{k}"
            if (iteration / "done.json").exists():
                self.rows.append(TableRow(**json.loads((iteration / "done.json").read_text())["row_before"]))
                continue
            started = time.perf_counter()
            sample = self.sample(k - 1)
            pairs = preference_pairs(sample.scored, config.fraction, config.max_pairs_per_prompt, rng, config.plagiarism,
                                     config.max_misaligned_share, sample.unconverted if config.reject_unconverted else ())
            if main:
                iteration.mkdir(parents=True, exist_ok=True)
                with open(iteration / "preferences.jsonl", "w", encoding="utf-8") as handle:
                    for pair in pairs:
                        handle.write(json.dumps(pair) + "\n")
                policy = NotagenGenerator.load(self.model_dir(k - 1)).model.float()
                stats = train_on_pairs(policy, pairs, config, rng)
                policy.save_pretrained(iteration / "model")
                prompts_file = self.model_dir(0) / "prompts.txt"
                if prompts_file.is_file():
                    (iteration / "model" / "prompts.txt").write_text(prompts_file.read_text())
                unconverted = sum(pair["rejected_score"] is None for pair in pairs)
                (iteration / "done.json").write_text(json.dumps({
                    "iteration": k, "row_before": dataclasses.asdict(self.rows[-1]), "training": stats,
                    "pairs_rejecting_unconverted": unconverted,
                    "seconds": round(time.perf_counter() - started, 1), "config": dataclasses.asdict(config)}, indent=1) + "\n")
                print(f"iteration {k}: {len(pairs)} pairs ({unconverted} rejecting an unconverted piece), {stats}", flush=True)
            if torch.distributed.is_initialized():
                torch.distributed.barrier()
        self.sample(config.iterations)
        return self.dir


def _resolve(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else ROOT / path
