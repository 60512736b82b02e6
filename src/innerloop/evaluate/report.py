"""Evaluation reports: one JSON and one Markdown file per evaluation setting in the run folder.

The file name carries everything that changes the numbers — split, ways, shots, queries,
checkpoint, episode count, seed and, for gradient-based methods, the inner step counts — so
evaluations with different settings never overwrite each other.

A report holds one score per evaluated inner-step count (``results``; a single entry with
``inner_steps = None`` for methods without an inner loop). The first entry is the headline
number (``mean``/``ci95``).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StepResult:
    inner_steps: int | None  # inner steps taken on each support set; None: no inner loop
    mean: float  # over the episodes with a finite score
    ci95: float
    non_finite: int = 0  # episodes left out because their score was nan or inf


@dataclass(frozen=True)
class EvaluationReport:
    method: str
    transductive: bool
    dataset: str
    split: str
    ways: int
    shots: int
    queries: int
    episodes: int
    seed: int
    metric: str  # accuracy | mse
    results: list[StepResult]
    checkpoint: str
    step: int
    seconds: float
    date: str
    notes: list[str] = field(default_factory=list)
    adaptation: str = ""  # what adapting to one task costs, in forward/backward passes
    # name -> [mean, ci95] of the predictive's scores (nll, brier, ece; coverage_0.9, ...)
    uncertainty: dict[str, list[float]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # PNG files written next to the report
    trained_on: str | None = None  # the run's training dataset (differs from ``dataset`` cross-domain)
    # classification: ReliabilityBins.to_dict() of all queries (the reliability diagram's data)
    reliability: dict[str, list] | None = None

    @property
    def mean(self) -> float:
        return self.results[0].mean

    @property
    def ci95(self) -> float:
        return self.results[0].ci95

    @property
    def stem(self) -> str:
        checkpoint = self.checkpoint.removesuffix(".pt")
        steps = [r.inner_steps for r in self.results if r.inner_steps is not None]
        step_part = f"-steps{'-'.join(map(str, steps))}" if steps else ""
        domain = f"{self.dataset}-" if self.trained_on not in (None, self.dataset) else ""
        return (f"eval-{domain}{self.split}-{self.ways}w{self.shots}s{self.queries}q-{checkpoint}-"
                f"{self.episodes}ep-seed{self.seed}{step_part}")

    def _format(self, value: float, ci95: float) -> str:
        return format_score(self.metric, value, ci95)

    def markdown(self) -> str:
        shape = (f"{self.ways}-way {self.shots}-shot" if self.metric == "accuracy"
                 else f"{self.shots}-shot regression")
        shift = f", meta-trained on {self.trained_on}" if self.trained_on not in (None, self.dataset) else ""
        lines = [f"# {self.method} on {self.dataset} ({self.split}{shift}), {shape}", "", "| | |", "| --- | --- |"]
        for result in self.results:
            where = "" if result.inner_steps is None else f" after {result.inner_steps} inner steps"
            excluded = (f"; {result.non_finite} of {self.episodes} episodes diverged (non-finite "
                        f"{self.metric}), left out of this mean" if result.non_finite else "")
            lines.append(f"| {self.metric}{where} | **{self._format(result.mean, result.ci95)}** (95% CI{excluded}) |")
        for name, (mean, ci95) in self.uncertainty.items():
            lines.append(f"| {uncertainty_label(name)} | {mean:.4f} ± {ci95:.4f} (95% CI) |")
        lines += [
            f"| method | {self.method} |",
            f"| transductive | {'yes' if self.transductive else 'no'} |",
            *([f"| adaptation per task | {self.adaptation} |"] if self.adaptation else []),
            f"| dataset / split | {self.dataset} / {self.split} |",
            f"| ways / shots / queries per class | {self.ways} / {self.shots} / {self.queries} |",
            f"| episodes (fixed, seeded) | {self.episodes} (seed {self.seed}) |",
            f"| checkpoint | {self.checkpoint} (step {self.step}) |",
            f"| evaluation time | {self.seconds:.1f} s |",
            f"| date | {self.date} |",
            *(f"| note | {note} |" for note in self.notes),
            *(f"| figure | [{figure}]({figure}) |" for figure in self.figures),
            "",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, run_dir: Path) -> tuple[Path, Path]:
        json_path = run_dir / f"{self.stem}.json"
        markdown_path = run_dir / f"{self.stem}.md"
        for path, text in ((json_path, json.dumps(self.to_dict(), indent=2) + "\n"),
                           (markdown_path, self.markdown())):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return json_path, markdown_path


def format_score(metric: str, value: float, ci95: float) -> str:
    """``98.12% ± 0.19%`` for accuracy, ``0.4336 ± 0.0416`` for other metrics (mse)."""
    if metric == "accuracy":
        return f"{100 * value:.2f}% ± {100 * ci95:.2f}%"
    return f"{value:.4f} ± {ci95:.4f}"


def uncertainty_label(name: str) -> str:
    """A reader's name for an uncertainty score key."""
    if name.startswith("coverage_"):
        return f"coverage of the central {100 * float(name.removeprefix('coverage_')):g}% interval"
    return {"nll": "negative log-likelihood", "brier": "Brier score",
            "ece": "expected calibration error"}.get(name, name)


def today() -> str:
    return datetime.date.today().isoformat()
