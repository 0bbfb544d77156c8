"""The paper's objective metrics over encoder features and ABC text (NotaGen, section 5.2 / Table 2).

* CLaMP score: cosine of a piece's feature with the mean feature of its prompt's reference pieces
  (the official `statistics.py`); the average over pieces is ACS.
* Label accuracy: linear classifiers on features predict period and instrumentation.
* Plagiarism: the highest cosine of a piece with any single reference piece.
* Instrument adjacency: the staves of one instrument stand next to each other.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.nn import functional as F


def cosine_to(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[N] cosine of each row of `features` [N, d] with the vector `target` [d]."""
    return F.cosine_similarity(features, target.unsqueeze(0), dim=-1)


def clamp_scores(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[N] CLaMP scores: cosine with the mean of the reference features [M, d]."""
    return cosine_to(features, reference.mean(dim=0))


def max_similarity(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[N] the highest cosine of each piece with any one reference piece (the plagiarism check)."""
    return (F.normalize(features, dim=-1) @ F.normalize(reference, dim=-1).T).max(dim=-1).values


@dataclass
class LinearProbe:
    """A multinomial logistic regression on standardized features.

    Written with torch (L-BFGS on the full batch, L2-regularized) rather than adding scikit-learn and
    SciPy to the requirements for this one convex fit; it solves the same problem as sklearn's
    `LogisticRegression(multi_class="multinomial")`.
    """

    classes: list[str]
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, labels: list[str], l2: float = 1e-3, steps: int = 200) -> LinearProbe:
        classes = sorted(set(labels))
        targets = torch.tensor([classes.index(label) for label in labels])
        mean, scale = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
        x = (features - mean) / scale
        linear = torch.nn.Linear(x.shape[1], len(classes))
        optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(linear(x), targets) + l2 * linear.weight.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        return cls(classes, mean, scale, linear.weight.detach(), linear.bias.detach())

    def predict(self, features: torch.Tensor) -> list[str]:
        logits = ((features - self.mean) / self.scale) @ self.weight.T + self.bias
        return [self.classes[i] for i in logits.argmax(dim=-1).tolist()]

    def accuracy(self, features: torch.Tensor, labels: list[str]) -> float | None:
        """Share of rows predicted as labelled; None for no rows."""
        if not labels:
            return None
        return sum(p == t for p, t in zip(self.predict(features), labels)) / len(labels)


_VOICE_LINE = re.compile(r"^V:\s*(\S+)(.*)$")
_NAME = re.compile(r'\bnm="([^"]*)"')


def instrument_staves_adjacent(abc: str) -> bool:
    """True when every instrument's staves are consecutive in the voice order.

    A voice whose `V:` line has no `nm=` name continues the instrument named before it (xml2abc names
    only the first staff of a piano or organ part), so a name that comes back after another
    instrument's staves means that instrument's staves were split apart.
    """
    seen: list[str] = []
    current = None
    for line in abc.splitlines():
        match = _VOICE_LINE.match(line)
        if not match:
            continue
        name = _NAME.search(match.group(2))
        if name is None or name.group(1) == current:
            continue
        current = name.group(1)
        if current in seen:
            return False
        seen.append(current)
    return True
