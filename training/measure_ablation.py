"""The measure model's ablation studies (Yan & Duan, section 5.3, Tables 1 and 2) as one command.

    python -m training.measure_ablation [--steps 400] [--out runs/measure_ablation] [--only NAME ...]

Every variant is a `training.measure` run of the base config with some settings replaced (the same
as `python -m training.measure --set kind=concurrent --set key_function=skewgauss ...`), then
evaluated on the test split (`training.measure.evaluate`: NLL and length accuracy, plain and on the
doubled-length test). A variant whose `metrics.json` exists is not trained again, so a stopped
run resumes. The tables are written to `OUT/results.md` (and `results.json`) in the paper's layout,
next to the paper's numbers.

Table 1: the concurrent-measure task, the four key functions x the two readers. Table 2: with
softmax + attention reader and skewgauss + position-only reader, with and without the within-beat
position signal (-pos), and without measure memory matrices, on the concurrent-measure task and on
the single-part task.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from training.measure import ROOT, evaluate, load_pieces, train

#: The paper's figures (Tables 1 and 2; cells the extraction lost are None).
PAPER_TABLE1 = {
    ("attention", "identity"): (13.49, 55.94), ("attention", "softmax"): (12.13, 45.53),
    ("attention", "sigmoid"): (14.35, 77.02), ("attention", "skewgauss"): (12.18, 73.20),
    ("position", "identity"): (13.70, 69.35), ("position", "softmax"): (13.60, 89.22),
    ("position", "sigmoid"): (12.62, 56.88), ("position", "skewgauss"): (12.33, None),
}


@dataclass(frozen=True)
class Variant:
    task: str  # "concurrent" or "single"
    key_function: str
    reader: str
    position_signal: bool = True
    memory: bool = True

    @property
    def name(self) -> str:
        base = f"{self.task}-{self.key_function}-{self.reader}" if self.memory else f"{self.task}-nomemory"
        return base + ("" if self.position_signal else "-nopos")

    def settings(self) -> dict:
        return {"kind": self.task, "key_function": self.key_function, "reader": self.reader,
                "position_signal": self.position_signal, "memory": self.memory}


TABLE2_KEYS = (("softmax", "attention"), ("skewgauss", "position"))


def table1_variants() -> list[Variant]:
    return [Variant("concurrent", key, reader) for reader in ("attention", "position")
            for key in ("identity", "softmax", "sigmoid", "skewgauss")]


def table2_variants(task: str) -> list[Variant]:
    rows = [Variant(task, key, reader, pos) for key, reader in TABLE2_KEYS for pos in (True, False)]
    return rows + [Variant(task, "softmax", "attention", pos, memory=False) for pos in (True, False)]


def all_variants() -> list[Variant]:
    seen: dict[str, Variant] = {}
    for variant in table1_variants() + table2_variants("concurrent") + table2_variants("single"):
        seen.setdefault(variant.name, variant)
    return list(seen.values())


def run_variant(variant: Variant, config: str, out: Path, steps: int, threads: int, pieces) -> dict:
    """Train (or resume) one variant and evaluate its best validation checkpoint."""
    metrics_file = out / variant.name / "metrics.json"
    if metrics_file.exists():
        return json.loads(metrics_file.read_text())
    overrides = {**variant.settings(), "name": variant.name, "steps": steps, "eval_every": max(1, steps // 2),
                 "checkpoint_every": max(1, steps // 4), "max_minutes": 0, "threads": threads}
    run = train(config, run_root=out, overrides=overrides)
    info = json.loads((run / "best" / "training.json").read_text())
    metrics = {"variant": variant.name, **variant.settings(), "steps": steps, "best_step": info["step"],
               "wall_s": info["wall_s"], **evaluate(run / "best", threads=threads, pieces=pieces)}
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _cells(m: dict | None) -> str:
    if m is None:
        return "| | | | |"
    return (f"| {m['nll']:.2f} | {100 * m['length_accuracy']:.1f} | {m['nll_doubled']:.2f} "
            f"| {100 * m['length_accuracy_doubled']:.1f} |")


def _paper(value) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown(results: dict[str, dict], steps: int) -> str:
    lines = [f"Measured here: {steps} training steps per variant (see the command in docs/measure_model.md); "
             "nll in nats per measure, len acc in %; (aug.): the doubled-length test.", "",
             "Table 1 (concurrent-measure task): key function x reader", "",
             "| reader | key() | nll | len acc | nll (aug.) | len acc (aug.) | paper nll | paper len acc |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in table1_variants():
        paper = PAPER_TABLE1[(variant.reader, variant.key_function)]
        lines.append(f"| {variant.reader} | {variant.key_function} " + _cells(results.get(variant.name))
                     + f" {_paper(paper[0])} | {_paper(paper[1])} |")
    for task, title in (("concurrent", "concurrent-measure task"), ("single", "single-part task")):
        lines += ["", f"Table 2 ({title}): -pos = without the within-beat position signal", "",
                  "| variant | nll | len acc | nll (aug.) | len acc (aug.) |", "|---|---|---|---|---|"]
        for variant in table2_variants(task):
            label = (f"key(): {variant.key_function}, {variant.reader} reader" if variant.memory
                     else "no measure memory matrices") + ("" if variant.position_signal else ", -pos")
            lines.append(f"| {label} " + _cells(results.get(variant.name)))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.measure_ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "training/configs/measure_ablation.json"))
    parser.add_argument("--out", default=str(ROOT / "runs/measure_ablation"))
    parser.add_argument("--steps", type=int, default=400, help="training steps per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all 18)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pieces = load_pieces()
    results = {}
    for variant in all_variants():
        if args.only and variant.name not in args.only:
            continue
        results[variant.name] = run_variant(variant, args.config, out, args.steps, args.threads, pieces)
        print(f"{variant.name}: " + json.dumps({k: results[variant.name][k] for k in
                                                ("nll", "length_accuracy", "nll_doubled", "length_accuracy_doubled")}), flush=True)
    for path in sorted(out.glob("*/metrics.json")):  # earlier invocations' variants too
        found = json.loads(path.read_text())
        results.setdefault(found["variant"], found)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, args.steps))
    print(markdown(results, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
