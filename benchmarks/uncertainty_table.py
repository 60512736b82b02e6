"""Collect evaluated runs into one uncertainty table (JSON + Markdown) and one figure.

    python -m benchmarks.uncertainty_table runs/uq-sinusoid-* --shots 10 5 \
        --out benchmarks/results/uncertainty_sinusoid.json --bands docs/uncertainty-bands-sinusoid.png

Each run directory must hold evaluation reports (``innerloop eval RUN --shots K``); the table
takes, per run and per shot count, the newest report on the test split: the score (accuracy or
MSE), and the predictive's NLL, ECE (classification) or the coverage of the central 90%
interval (regression), each with its 95% interval. For regression runs ``--bands`` draws every
method's predictive mean and 90% band on the same three test tasks in one figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def newest_report(run_dir: Path, shots: int, ways: int | None = None,
                  episodes: int | None = None) -> dict | None:
    """The newest test report of ``best.pt`` at ``shots`` (and ``ways`` / ``episodes`` if given)."""
    ways_part = "*" if ways is None else str(ways)
    episodes_part = "*" if episodes is None else str(episodes)
    reports = list(run_dir.glob(f"eval-test-{ways_part}w{shots}s*-best-{episodes_part}ep-*.json"))
    if not reports:
        return None
    return json.loads(max(reports, key=lambda path: path.stat().st_mtime).read_text())


def table_rows(runs: list[Path], shots: list[int], ways: int | None = None,
               episodes: int | None = None) -> list[dict]:
    rows = []
    for run_dir in runs:
        for count in shots:
            report = newest_report(run_dir, count, ways, episodes)
            if report is None:
                continue
            rows.append({"run": run_dir.name, "method": report["method"], "dataset": report["dataset"],
                         "ways": report["ways"], "shots": count, "episodes": report["episodes"],
                         "metric": report["metric"], "score": report["results"][0]["mean"],
                         "score_ci95": report["results"][0]["ci95"], "uncertainty": report.get("uncertainty", {}),
                         "step": report["step"], "date": report["date"]})
    return rows


def markdown(rows: list[dict]) -> str:
    regression = rows and rows[0]["metric"] == "mse"
    second = ("coverage_0.9", "90% coverage") if regression else ("ece", "ECE")
    score = "MSE" if regression else "accuracy"
    lines = [f"| method | shots | {score} | NLL | {second[1]} |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        value = (f"{row['score']:.3f} ± {row['score_ci95']:.3f}" if regression
                 else f"{100 * row['score']:.2f} ± {100 * row['score_ci95']:.2f}%")
        nll = row["uncertainty"].get("nll", [float("nan")] * 2)
        other = row["uncertainty"].get(second[0], [float("nan")] * 2)
        digits = 3 if regression else 4
        lines.append(f"| {row['method']} | {row['shots']} | {value} | {nll[0]:.3f} ± {nll[1]:.3f} | "
                     f"{other[0]:.{digits}f} ± {other[1]:.{digits}f} |")
    return "\n".join(lines) + "\n"


def draw_bands(runs: list[Path], shots: int, path: Path, seed: int = 0) -> Path:
    """Every run's predictive on the same three test tasks of its dataset, one row per run."""
    from innerloop.build import build_sampler, load_splits
    from innerloop.evaluate.plots import plot_predictive_bands
    from innerloop.evaluate.run import load_run

    methods, tasks, dataset = [], None, None
    for run_dir in runs:
        config, learner, _, _ = load_run(run_dir, "best", [f"eval.shots={shots}", "num_threads=1"])
        split = load_splits(config, None, [config.data.test_split])[config.data.test_split]
        if tasks is None:
            dataset = config.data.dataset
            tasks = build_sampler(config, split, 1, shots, 1).plot_tasks(3, seed)
        elif config.data.dataset != dataset:
            raise SystemExit(f"{run_dir} is on {config.data.dataset}, the others on {dataset}")
        methods.append((learner.name, learner))
    return plot_predictive_bands(methods, tasks, path,
                                 f"{dataset}, {shots} support points: predictive mean and 90% interval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--shots", nargs="+", type=int, required=True)
    parser.add_argument("--ways", type=int, help="only reports at these ways (classification)")
    parser.add_argument("--episodes", type=int, help="only reports over this many episodes")
    parser.add_argument("--out", type=Path, required=True, help="JSON; a .md with the table is written beside it")
    parser.add_argument("--bands", type=Path, help="PNG of every regression run's predictive bands")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = table_rows(args.runs, args.shots, args.ways, args.episodes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    text = markdown(rows)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    if args.bands:
        print(f"figure: {draw_bands(args.runs, min(args.shots), args.bands)}")


if __name__ == "__main__":
    main()
