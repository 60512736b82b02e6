"""Evaluation reports: one JSON and one Markdown file per evaluation setting in the run folder.

The file name carries everything that changes the number — split, ways, shots, queries,
checkpoint, episode count and seed — so evaluations with different settings never overwrite each other.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


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
    accuracy: float
    ci95: float
    checkpoint: str
    step: int
    seconds: float
    date: str

    @property
    def stem(self) -> str:
        checkpoint = self.checkpoint.removesuffix(".pt")
        return (f"eval-{self.split}-{self.ways}w{self.shots}s{self.queries}q-{checkpoint}-"
                f"{self.episodes}ep-seed{self.seed}")

    def markdown(self) -> str:
        return "\n".join([
            f"# {self.method} on {self.dataset} ({self.split}), {self.ways}-way {self.shots}-shot",
            "",
            "| | |",
            "| --- | --- |",
            f"| accuracy | **{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}%** (95% CI) |",
            f"| method | {self.method} |",
            f"| transductive | {'yes' if self.transductive else 'no'} |",
            f"| dataset / split | {self.dataset} / {self.split} |",
            f"| ways / shots / queries per class | {self.ways} / {self.shots} / {self.queries} |",
            f"| episodes (fixed, seeded) | {self.episodes} (seed {self.seed}) |",
            f"| checkpoint | {self.checkpoint} (step {self.step}) |",
            f"| evaluation time | {self.seconds:.1f} s |",
            f"| date | {self.date} |",
            "",
        ])

    def save(self, run_dir: Path) -> tuple[Path, Path]:
        json_path = run_dir / f"{self.stem}.json"
        markdown_path = run_dir / f"{self.stem}.md"
        for path, text in ((json_path, json.dumps(asdict(self), indent=2) + "\n"),
                           (markdown_path, self.markdown())):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return json_path, markdown_path


def today() -> str:
    return datetime.date.today().isoformat()
