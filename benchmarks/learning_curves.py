"""Plot validation learning curves of finished or running runs from their ``metrics.jsonl``.

    python -m benchmarks.learning_curves runs/maml-5w1s runs/fomaml-5w1s --out docs/curves.png
        [--reference 0.987 --reference-label "MAML paper, 60k steps"]

Each run contributes its validation score (``val_accuracy`` or ``val_mse``) against the
meta-training step, with its 95% confidence interval as a band; ``--reference`` draws published
numbers as horizontal lines so the gap of a shorter schedule is visible.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_validation(run_dir: Path) -> tuple[str, list[int], list[float], list[float]]:
    steps, means, halves, metric = [], [], [], "score"
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        keys = [k for k in record if k.startswith("val_") and k != "val_ci95"]
        if keys:
            metric = keys[0].removeprefix("val_")
            steps.append(record["step"])
            means.append(record[keys[0]])
            halves.append(record["val_ci95"])
    return metric, steps, means, halves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", type=float, action="append", default=[])
    parser.add_argument("--reference-label", action="append", default=[])
    parser.add_argument("--title", default="validation during meta-training")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    metric = "score"
    for run_dir in args.runs:
        metric, steps, means, halves = read_validation(run_dir)
        line, = axis.plot(steps, means, marker="o", label=run_dir.name)
        axis.fill_between(steps, [m - h for m, h in zip(means, halves)],
                          [m + h for m, h in zip(means, halves)], color=line.get_color(), alpha=0.2)
    labels = args.reference_label + [None] * len(args.reference)
    styles = ["--", ":", "-.", (0, (5, 5))]
    for index, (value, label) in enumerate(zip(args.reference, labels)):
        axis.axhline(value, linestyle=styles[index % len(styles)], color="gray", linewidth=1,
                     label=f"{label} ({value:g})" if label else None)
    axis.set_xlabel("meta-training step")
    axis.set_ylabel(f"validation {metric}")
    axis.set_title(args.title)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
