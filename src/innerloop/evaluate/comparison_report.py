"""Compare trained runs side by side: one self-contained HTML page and its Markdown twin.

``write_comparison_report(run_dirs, out_dir)`` reads each run directory — ``config.yaml``,
``metrics.jsonl``, the evaluation reports ``eval-*.json`` (written by ``innerloop eval``) and the
robustness reports ``robustness-*.json`` — and writes into ``out_dir``:

* ``report.html``: one file, figures inlined as ``data:image/png;base64`` URIs, inline CSS;
* ``report.md`` with the same tables, and the figures as PNG files next to it.

The sections always appear, in this order, so that pages of different run sets line up:

1. **Runs** — method, dataset, backbone, trained steps, training ways/shots/queries, best
   validation score and the key settings of ``config.yaml``;
2. **Results** — one row per evaluation report: dataset (marked *cross-domain* when it is not the
   dataset the run trained on), split, ways/shots/queries, episodes, checkpoint, inner steps, the
   headline score as mean ± 95% CI (percent for accuracy), NLL/Brier/ECE/coverage where stored,
   and the scores after the other inner-step counts;
3. **Learning curves** — the training metric (thin line) and the validation metric (markers, with
   its 95% band) against the outer step, one panel per metric, one color per run;
4. **Reliability diagrams** (DeGroot & Fienberg 1983; Guo et al. 2017) — one panel per evaluation
   with calibration data: accuracy against confidence per bin for classification (the bins the
   report stores, :class:`~innerloop.evaluate.uncertainty.ReliabilityBins`), observed against nominal
   coverage of the central predictive intervals for regression; reports written before bins
   were stored show the diagram drawn at evaluation time instead;
5. **Robustness** — grouped bars per robustness report (score under each condition next to
   clean, 95% CI error bars) and a table with the change against clean.

A section without data says in one sentence what would fill it. matplotlib (Agg) is imported only
when figures are drawn; without it the report names the extra to install.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from innerloop.errors import InnerloopError
from innerloop.evaluate.report import format_score

RUN_DIRECTORY_CONTENTS = ("a run directory (written by `innerloop train`) holds config.yaml, "
                          "metrics.jsonl, best.pt/last.pt and the eval-*.json reports of `innerloop eval`")
UNCERTAINTY_COLUMNS = {"nll": "NLL", "brier": "Brier", "ece": "ECE"}  # then coverage_<level>
FIGURE_DPI = 100


# -- reading run directories -----------------------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    """What a run directory holds, read once."""

    path: Path
    label: str  # unique among the compared runs: the folder name (with its parent if needed)
    config: dict[str, Any]
    training_log: list[dict[str, Any]]  # metrics.jsonl lines with a training loss
    validation_log: list[dict[str, Any]]  # metrics.jsonl lines with val_ci95
    evaluations: list[dict[str, Any]]  # eval-*.json, normalized; "file" holds the file name
    robustness: list[dict[str, Any]]  # robustness-*.json; "file" holds the file name

    @property
    def dataset(self) -> str:
        return str((self.config.get("data") or {}).get("dataset", "?"))

    @property
    def algorithm(self) -> str:
        return str((self.config.get("model") or {}).get("algorithm", "?"))


def read_run(run_dir: str | Path, label: str | None = None) -> RunRecord:
    """Read ``run_dir``'s config, log, evaluation and robustness reports; an
    :class:`InnerloopError` says what is missing when it is not a run directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise InnerloopError(f"{path} is not a run directory (no such folder); {RUN_DIRECTORY_CONTENTS}")
    missing = [name for name in ("config.yaml", "metrics.jsonl") if not (path / name).is_file()]
    if missing:
        raise InnerloopError(f"{path} is not a run directory: it has no {' and no '.join(missing)}; "
                             f"{RUN_DIRECTORY_CONTENTS}")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except yaml.YAMLError as error:
        raise InnerloopError(f"{path / 'config.yaml'} is not valid YAML ({error}); it should be the "
                             f"config that `innerloop train` saved") from error
    training_log, validation_log = [], []
    for line in (path / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by an interrupted run; the trainer rewrites it on resume
        if not isinstance(record, dict) or "step" not in record:
            continue
        (validation_log if "val_ci95" in record else training_log).append(record)
    evaluations = [_read_evaluation(file) for file in sorted(path.glob("eval-*.json"))]
    evaluations.sort(key=lambda report: (report["dataset"] != (config.get("data") or {}).get("dataset"),
                                         report["dataset"], report["split"], report["ways"],
                                         report["shots"], report["queries"], report["checkpoint"],
                                         report["episodes"], report["file"]))
    robustness = [_read_robustness(file) for file in sorted(path.glob("robustness-*.json"))]
    return RunRecord(path, label or path.name, config, training_log, validation_log, evaluations, robustness)


def _read_json(file: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except ValueError as error:
        raise InnerloopError(f"{file} is not valid JSON ({error}); delete it or write the {what} "
                             f"again") from error
    if not isinstance(data, dict):
        raise InnerloopError(f"{file} is not a {what} (expected a JSON object)")
    return data


def _read_evaluation(file: Path) -> dict[str, Any]:
    """An eval-*.json report with ``results`` (reports from before inner-step counts held one
    top-level ``accuracy`` and ``ci95``; they become one result without inner steps)."""
    report = _read_json(file, "evaluation report (innerloop eval)")
    if "results" not in report:
        if "accuracy" not in report or "ci95" not in report:
            raise InnerloopError(f"{file} is not an evaluation report: it has neither 'results' nor "
                                 f"'accuracy'/'ci95'; run `innerloop eval` on the run again")
        report = {**report, "metric": "accuracy",
                  "results": [{"inner_steps": None, "mean": report["accuracy"], "ci95": report["ci95"]}]}
    for key, default in (("dataset", "?"), ("split", "?"), ("ways", 0), ("shots", 0), ("queries", 0),
                         ("episodes", 0), ("checkpoint", "?"), ("metric", "accuracy"), ("step", None)):
        report.setdefault(key, default)
    report.setdefault("uncertainty", {})
    report.setdefault("figures", [])
    report["file"] = file.name
    return report


def _read_robustness(file: Path) -> dict[str, Any]:
    report = _read_json(file, "robustness report (innerloop robustness)")
    conditions = report.get("conditions")
    if report.get("kind", "robustness") != "robustness" or not isinstance(conditions, list):
        raise InnerloopError(f"{file} is not a robustness report: it needs \"kind\": \"robustness\" and a "
                             f"list of \"conditions\"; run `innerloop robustness` on the run again")
    for index, condition in enumerate(conditions):
        if not isinstance(condition, dict) or "mean" not in condition or "ci95" not in condition:
            raise InnerloopError(f"{file}: condition {index} has no 'mean' and 'ci95'")
    report.setdefault("metric", "accuracy")
    report["file"] = file.name
    return report


def read_runs(run_dirs: Sequence[str | Path]) -> list[RunRecord]:
    """Read each run directory once (repeats dropped); labels are the folder names, with the
    parent folder added where two runs share a name."""
    if not run_dirs:
        raise InnerloopError(f"name at least one run directory to report on; {RUN_DIRECTORY_CONTENTS}")
    paths: list[Path] = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        if all(path.resolve() != seen.resolve() for seen in paths):
            paths.append(path)
    names = [path.resolve().name for path in paths]
    labels = [f"{path.resolve().parent.name}/{name}" if names.count(name) > 1 else name
              for path, name in zip(paths, names)]
    return [read_run(path, label) for path, label in zip(paths, labels)]


# -- the page as data: sections of paragraphs, tables and figures -----------------------------

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    nowrap: set[int] = field(default_factory=set)  # columns whose cells should not wrap


@dataclass
class Figure:
    file_name: str  # where report.md finds it
    png: bytes
    caption: str
    width: int | None = None  # pixels on the HTML page; None: its own width, at most the page's


Block = str | Table | Figure  # a str is a paragraph; `code` in backticks


@dataclass
class Section:
    title: str
    blocks: list[Block]

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass(frozen=True)
class ComparisonReportFiles:
    html: Path
    markdown: Path
    figures: list[Path]


def write_comparison_report(run_dirs: Sequence[str | Path], out_dir: str | Path,
                            title: str | None = None) -> ComparisonReportFiles:
    """Read ``run_dirs`` and write ``report.html`` (self-contained), ``report.md`` and the figures'
    PNG files into ``out_dir`` (created). Returns the paths written."""
    runs = read_runs(run_dirs)
    plt = _pyplot()  # before drawing anything: a missing matplotlib is reported, nothing written
    sections = [runs_section(runs), results_section(runs), learning_curves_section(runs, plt),
                reliability_section(runs, plt), robustness_section(runs, plt)]
    title = title or f"innerloop: comparison of {len(runs)} run{'s' if len(runs) != 1 else ''}"
    preamble = (f"Generated {datetime.date.today().isoformat()} by `innerloop report` from "
                + ", ".join(f"`{run.path}`" for run in runs) + ".")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Figure):
                (out / block.file_name).write_bytes(block.png)
                figures.append(out / block.file_name)
    html_path, markdown_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(title, preamble, sections), encoding="utf-8")
    markdown_path.write_text(render_markdown(title, preamble, sections), encoding="utf-8")
    return ComparisonReportFiles(html_path, markdown_path, figures)


# -- sections --------------------------------------------------------------------------------

def runs_section(runs: list[RunRecord]) -> Section:
    table = Table(["run", "method", "dataset", "backbone", "trained steps", "training ways / shots / queries",
                   "meta-batch", "best validation", "settings"], [], nowrap={0})
    for run in runs:
        train = run.config.get("train") or {}
        planned = train.get("steps")
        done = max((int(record["step"]) for record in run.training_log + run.validation_log), default=0)
        steps = f"{done}" if planned in (None, done) else f"{done} of {planned}"
        table.rows.append([
            run.label, run.algorithm, run.dataset, _backbone(run.config), steps,
            f"{train.get('ways', '?')} / {train.get('shots', '?')} / {train.get('queries', '?')}",
            str(train.get("meta_batch_size", "?")), _best_validation(run), _key_settings(run.config)])
    return Section("Runs", [table, "Run folders: " + "; ".join(f"{run.label} = `{run.path}`" for run in runs) + "."])


def _backbone(config: dict[str, Any]) -> str:
    model = config.get("model") or {}
    backbone = str(model.get("backbone", "?"))
    if backbone.startswith("conv") and model.get("hidden_channels"):
        return f"{backbone} ({model['hidden_channels']} channels)"
    if model.get("hidden_sizes") and "mlp" in backbone:
        return f"{backbone} ({', '.join(map(str, model['hidden_sizes']))})"
    return backbone


def _best_validation(run: RunRecord) -> str:
    scored = []
    for record in run.validation_log:
        names = [key for key in record if key.startswith("val_") and key != "val_ci95"]
        if names and isinstance(record[names[0]], (int, float)) and math.isfinite(record[names[0]]):
            scored.append((names[0].removeprefix("val_"), float(record[names[0]]),
                           float(record.get("val_ci95", math.nan)), int(record["step"])))
    if not scored:
        return "—"
    metric = scored[0][0]
    higher_is_better = metric == "accuracy"
    name, value, ci95, step = (max if higher_is_better else min)(scored, key=lambda entry: entry[1])
    return f"{format_score(name, value, ci95)} ({name}, step {step})"


def _is_gradient_based(algorithm: str) -> bool:
    try:
        from innerloop.algorithms import ALGORITHMS, GradientLearner

        return issubclass(ALGORITHMS[algorithm], GradientLearner)
    except (KeyError, ImportError, TypeError):
        return False


def _key_settings(config: dict[str, Any]) -> str:
    """The settings that distinguish runs of one method: outer optimizer, inner loop (gradient-
    based methods), the method's own model options, and the rotations of image datasets."""
    from innerloop.config import MODEL_OPTION_OWNERS

    model, optim, inner = config.get("model") or {}, config.get("optim") or {}, config.get("inner") or {}
    parts = []
    outer = f"{optim.get('name', '?')} lr {optim.get('lr', '?')}"
    if optim.get("schedule") == "step":
        outer += f", ×{optim.get('gamma')} every {optim.get('step_size')} steps"
    elif optim.get("schedule") not in (None, "constant"):
        outer += f", {optim['schedule']} schedule"
    parts.append(f"outer: {outer}")
    algorithm = str(model.get("algorithm", ""))
    if _is_gradient_based(algorithm):
        steps = inner.get("steps", "?")
        evaluation = inner.get("eval_steps")
        step_text = f"{steps} step{'s' if steps != 1 else ''}" + (
            f" ({evaluation} at test)" if evaluation not in (None, steps) else "")
        parts.append(f"inner: {step_text}, {inner.get('optimizer', 'sgd')} lr {inner.get('lr', '?')}, "
                     f"{inner.get('order', '?')} order" + (f", adapt {inner['adapt']}" if inner.get("adapt") else ""))
    for key, owners in MODEL_OPTION_OWNERS.items():
        if algorithm in owners and model.get(key) is not None:
            parts.append(f"{key} {model[key]}")
    if (model.get("ensemble") or 1) > 1:
        parts.append(f"ensemble of {model['ensemble']}")
    rotations = (config.get("data") or {}).get("rotations")
    if (config.get("data") or {}).get("dataset") == "omniglot" and rotations:
        parts.append("rotations " + "/".join(map(str, rotations)))
    return "; ".join(parts)


def _uncertainty_keys(evaluations: list[dict[str, Any]]) -> list[str]:
    present = {key for report in evaluations for key in report["uncertainty"]}
    coverage = sorted((key for key in present if key.startswith("coverage_")),
                      key=lambda key: float(key.removeprefix("coverage_")))
    return [key for key in UNCERTAINTY_COLUMNS if key in present] + coverage


def _uncertainty_header(key: str) -> str:
    if key.startswith("coverage_"):
        return f"coverage {100 * float(key.removeprefix('coverage_')):g}%"
    return UNCERTAINTY_COLUMNS[key]


def is_cross_domain(report: dict[str, Any], run: RunRecord) -> bool:
    """Whether an evaluation scored the run on a dataset other than the one it trained on (the
    report's ``trained_on`` where it has one, else the run's ``data.dataset``)."""
    return report["dataset"] != (report.get("trained_on") or run.dataset)


def _dataset_cell(report: dict[str, Any], run: RunRecord) -> str:
    if is_cross_domain(report, run):
        return f"{report['dataset']}\n(cross-domain)"
    return str(report["dataset"])


def _checkpoint_cell(report: dict[str, Any]) -> str:
    return str(report.get("checkpoint", "?")) + (f"\nstep {report['step']}" if report.get("step") is not None else "")


def headline_cell(report: dict[str, Any]) -> str:
    """The first result of an evaluation report as ``mean ± ci95`` (percent for accuracy)."""
    first = report["results"][0]
    return format_score(report["metric"], first["mean"], first["ci95"])


def results_section(runs: list[RunRecord]) -> Section:
    evaluations = [(run, report) for run in runs for report in run.evaluations]
    if not evaluations:
        return Section("Results", ["No evaluation reports in these runs: run `innerloop eval RUN_DIR` "
                                   "to write an eval-*.json report into a run directory."])
    keys = _uncertainty_keys([report for _, report in evaluations])
    header = ["run", "dataset", "split", "ways / shots / queries", "episodes", "checkpoint",
              "inner steps", "metric", "mean ± 95% CI", *map(_uncertainty_header, keys)]
    table = Table(header, [], nowrap={0, 1, 3, *range(8, 9 + len(keys))})
    for run, report in evaluations:
        results = report["results"]
        row = [run.label, _dataset_cell(report, run), str(report["split"]),
               f"{report['ways']} / {report['shots']} / {report['queries']}", str(report["episodes"]),
               _checkpoint_cell(report),
               "\n".join("—" if result.get("inner_steps") is None else str(result["inner_steps"])
                         for result in results),
               str(report["metric"]),
               "\n".join(format_score(report["metric"], result["mean"], result["ci95"]) for result in results)]
        for key in keys:
            value = report["uncertainty"].get(key)
            row.append("—" if value is None else f"{value[0]:.4f}\n± {value[1]:.4f}")
        table.rows.append(row)
    several_counts = any(len(report["results"]) > 1 for _, report in evaluations)
    cross = any(is_cross_domain(report, run) for run, report in evaluations)
    notes = ["One row per evaluation report (`eval-*.json`); the score is the mean over fixed, seeded "
             "test episodes ± the half-width of its 95% confidence interval"
             + ("; a gradient-based method is scored after each inner-step count, its headline count "
                "first (the calibration columns are at the headline count)" if several_counts else "") + "."]
    if cross:
        notes.append("Rows marked cross-domain score a run on a dataset other than the one it was "
                     "trained on (the Runs table names that one).")
    return Section("Results", [table, *notes])


def learning_curves_section(runs: list[RunRecord], plt) -> Section:
    title = "Learning curves"
    metrics: list[str] = []
    for run in runs:
        metric = _training_metric(run)
        if metric and metric not in metrics:
            metrics.append(metric)
    if not metrics:
        return Section(title, ["No training log lines in these runs' metrics.jsonl yet: the trainer "
                               "writes one every `train.log_every` steps and a validation line every "
                               "`train.val_every` steps."])
    figure, axes = plt.subplots(1, len(metrics), figsize=(min(6.4 * len(metrics), 12.8), 4.3), squeeze=False,
                                layout="constrained")
    for axis, metric in zip(axes[0], metrics):
        for index, run in enumerate(runs):
            if _training_metric(run) != metric:
                continue
            color = _run_color(plt, index)
            train = [(record["step"], record[metric]) for record in run.training_log
                     if _finite(record.get(metric))]
            if train:
                axis.plot(*zip(*train), color=color, linewidth=1, alpha=0.55)
            validation = [(record["step"], record[f"val_{metric}"], record.get("val_ci95", math.nan))
                          for record in run.validation_log if _finite(record.get(f"val_{metric}"))]
            if validation:
                steps, values, ci95 = zip(*validation)
                axis.plot(steps, values, color=color, linewidth=2, marker="o", markersize=4)
                if all(_finite(value) for value in ci95):
                    axis.fill_between(steps, [v - c for v, c in zip(values, ci95)],
                                      [v + c for v, c in zip(values, ci95)], color=color, alpha=0.15,
                                      linewidth=0)
            axis.plot([], [], color=color, linewidth=2, label=run.label)
        if metric != "accuracy" and _spans_decades(axis):
            axis.set_yscale("log")
        lengths = [max(record["step"] for record in run.training_log + run.validation_log)
                   for run in runs if _training_metric(run) == metric]
        if min(lengths) > 0 and max(lengths) > 20 * min(lengths):  # a short run would be a dot at the left edge
            axis.set_xscale("log")
        axis.set_xlabel("outer step" + (" (log scale)" if axis.get_xscale() == "log" else ""))
        axis.set_ylabel(metric)
        axis.set_title(f"{metric}: training (thin line) and validation (markers, 95% band)", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    caption = ("Training metric (thin line, the mean over each logging interval's meta-batches) and "
               "validation metric (markers; shaded: its 95% CI) against the outer step; one panel per "
               "metric, one color per run.")
    return Section(title, [Figure("learning_curves.png", _png(plt, figure), caption)])


def _training_metric(run: RunRecord) -> str | None:
    for record in run.validation_log:
        for key in record:
            if key.startswith("val_") and key != "val_ci95":
                return key.removeprefix("val_")
    for record in run.training_log:
        for key in record:
            if key not in ("step", "loss", "lr", "tasks_per_s", "world_size"):
                return key
    return None


def _spans_decades(axis) -> bool:
    values = [y for line in axis.get_lines() for y in line.get_ydata() if _finite(y)]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 20


def reliability_section(runs: list[RunRecord], plt) -> Section:
    title = "Reliability diagrams"
    panels = []  # (run, report, kind)
    drawn_earlier = []  # (run, report, figure file) for reports without stored bins
    for run in runs:
        for report in run.evaluations:
            if report.get("reliability"):
                panels.append((run, report, "bins"))
            elif any(key.startswith("coverage_") for key in report["uncertainty"]):
                panels.append((run, report, "coverage"))
            else:
                stored = [name for name in report["figures"] if name.endswith("-reliability.png")
                          and (run.path / name).is_file()]
                if stored:
                    drawn_earlier.append((run, report, stored[0]))
    if not panels and not drawn_earlier:
        return Section(title, ["No calibration data in these runs' evaluation reports: `innerloop eval "
                               "RUN_DIR` stores reliability bins (classification) or interval coverage "
                               "(regression) in each eval-*.json."])
    blocks: list[Block] = []
    if panels:
        kinds = {kind for _, _, kind in panels}
        caption = ["One panel per evaluation; the dashed diagonal is perfect calibration."]
        if "bins" in kinds:
            caption.append("Classification: accuracy against confidence (the largest predicted "
                           "probability) in equal-width bins, the gap red where over-confident and "
                           "green where under-confident; below, predictions per bin.")
        if "coverage" in kinds:
            caption.append("Regression: observed against nominal coverage of the central predictive "
                           "intervals, with 95% CI bars.")
        blocks.append(Figure("reliability.png", _png(plt, _reliability_figure(plt, panels)), " ".join(caption)))
    for run, report, name in drawn_earlier:
        blocks.append(Figure(f"reliability-{_safe(run.label)}-{Path(name).stem}.png", (run.path / name).read_bytes(),
                             f"{run.label}, {_short_setting(report)}: drawn at evaluation time (this report "
                             f"predates stored bins; `innerloop eval` again draws it with the others).", width=380))
    return Section(title, blocks)


def _reliability_figure(plt, panels):
    from matplotlib.ticker import LogLocator, NullFormatter

    from innerloop.evaluate.plots import draw_reliability_diagram
    from innerloop.evaluate.uncertainty import ReliabilityBins

    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    width = 3.2 if len(panels) >= 3 else 4.0  # a panel or two may be larger
    figure = plt.figure(figsize=(width * columns, (3.9 if len(panels) >= 3 else 4.6) * rows), layout="constrained")
    cells = figure.add_gridspec(rows, columns)
    handles: dict[str, Any] = {}
    for index, (run, report, kind) in enumerate(panels):
        cell = cells[index // columns, index % columns]
        panel_title = f"{run.label}\n{_short_setting(report)}"
        if kind == "bins":
            inner = cell.subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
            top = figure.add_subplot(inner[0])
            bottom = figure.add_subplot(inner[1], sharex=top)
            draw_reliability_diagram(top, bottom, ReliabilityBins.from_dict(report["reliability"]),
                                     panel_title, legend=False)
            top.tick_params(labelbottom=False)
            top.set_title(top.get_title(), fontsize=8)
            bottom.set_xlabel("confidence", fontsize=8)
            for axis in (top, bottom):
                axis.tick_params(labelsize=7)
                axis.yaxis.label.set_size(8)
            bottom.yaxis.set_major_locator(LogLocator(numticks=3))
            bottom.yaxis.set_minor_formatter(NullFormatter())
            for handle, label in zip(*top.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        else:
            axis = figure.add_subplot(cell)
            levels = sorted((float(key.removeprefix("coverage_")), value)
                            for key, value in report["uncertainty"].items() if key.startswith("coverage_"))
            axis.plot([0, 1], [0, 1], "--", color="gray")
            axis.errorbar([level for level, _ in levels], [value[0] for _, value in levels],
                          yerr=[value[1] for _, value in levels], marker="o", color="tab:blue", capsize=3)
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1)
            axis.set_xlabel("nominal coverage", fontsize=8)
            axis.set_ylabel("observed coverage", fontsize=8)
            axis.tick_params(labelsize=7)
            axis.set_title(f"{panel_title}\ninterval coverage", fontsize=8)
            axis.grid(alpha=0.3)
    if handles:
        figure.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                      ncol=_legend_columns(list(handles), width * columns), fontsize=8)
    return figure


def _short_setting(report: dict[str, Any]) -> str:
    shape = (f"{report['ways']}-way {report['shots']}-shot" if report["metric"] == "accuracy"
             else f"{report['shots']}-shot")
    return f"{report['dataset']} {report['split']}, {shape}, {report['episodes']} ep"


def robustness_section(runs: list[RunRecord], plt) -> Section:
    title = "Robustness"
    reports = [(run, report) for run in runs for report in run.robustness]
    if not reports:
        return Section(title, ["No robustness evaluations in these runs: run `innerloop robustness RUN_DIR` "
                               "to write a robustness-*.json report (scores under support-label noise, "
                               "adversarial supports and other shifts, next to clean)."])
    metrics = list(dict.fromkeys(report["metric"] for _, report in reports))
    groups = {metric: [(run, report) for run, report in reports if report["metric"] == metric] for metric in metrics}
    orders = {metric: condition_order([report for _, report in group]) for metric, group in groups.items()}
    widths = [1.5 + len(groups[metric]) * (0.32 * len(orders[metric]) + 0.5) for metric in metrics]
    figure_width = min(max(sum(widths), 6.5), 12.8)
    figure, axes = plt.subplots(1, len(metrics), figsize=(figure_width, 4.8),
                                squeeze=False, layout="constrained", width_ratios=widths)
    handles: dict[str, Any] = {}
    for axis, metric in zip(axes[0], metrics):
        order = orders[metric]
        scale = 100.0 if metric == "accuracy" else 1.0
        bar = 0.8 / len(order)
        colors = plt.get_cmap("tab10" if len(order) <= 10 else "tab20")
        for position, (run, report) in enumerate(groups[metric]):
            for condition in report["conditions"]:
                slot = order.index(_condition_label(condition))
                handles[_condition_label(condition)] = axis.bar(
                    position - 0.4 + bar * (slot + 0.5), scale * condition["mean"], bar,
                    yerr=scale * condition["ci95"] if _finite(condition["ci95"]) else None,
                    capsize=2, color=colors(slot), edgecolor="black", linewidth=0.4)
        axis.set_xticks(range(len(groups[metric])))
        axis.set_xticklabels([f"{run.label}\n{report.get('ways', '?')}-way {report.get('shots', '?')}-shot, "
                              f"{report.get('dataset', '?')}" for run, report in groups[metric]], fontsize=8)
        axis.set_ylabel(f"{metric} (%)" if metric == "accuracy" else metric)
        axis.set_title(f"{metric} under each condition (95% CI)", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
        if metric == "accuracy":
            axis.set_ylim(0, 104)  # room above the error bar of a score near 100%
            axis.set_yticks(range(0, 101, 20))
    labels = [label for metric in metrics for label in orders[metric] if label in handles]
    labels = list(dict.fromkeys(labels))
    figure.legend([handles[label] for label in labels], labels, loc="outside lower center",
                  ncol=_legend_columns(labels, figure_width), fontsize=8)
    table = Table(["run", "dataset / split", "ways / shots / queries", "episodes", "checkpoint", "condition",
                   "settings", "mean ± 95% CI", "change vs clean"], [], nowrap={0, 7, 8})
    for run, report in reports:
        clean = next((condition for condition in report["conditions"] if condition.get("condition") == "clean"), None)
        for condition in report["conditions"]:
            change = "—"
            if clean is not None and condition is not clean:
                delta = condition["mean"] - clean["mean"]
                change = f"{100 * delta:+.2f} points" if report["metric"] == "accuracy" else f"{delta:+.4f}"
            settings = ", ".join(f"{key} {value}" for key, value in (condition.get("settings") or {}).items())
            table.rows.append([
                run.label, f"{report.get('dataset', '?')} / {report.get('split', '?')}",
                f"{report.get('ways', '?')} / {report.get('shots', '?')} / {report.get('queries', '?')}",
                str(report.get("episodes", "?")), _checkpoint_cell(report), _condition_label(condition),
                settings or "—", format_score(report["metric"], condition["mean"], condition["ci95"]), change])
    caption = ("Each group is one robustness report (`robustness-*.json`): the score under each "
               "condition next to the clean score, with 95% CI error bars; change vs clean in "
               "percentage points for accuracy.")
    return Section(title, [Figure("robustness.png", _png(plt, figure), caption), table])


def _condition_label(condition: dict[str, Any]) -> str:
    return str(condition.get("label", condition.get("condition", "?")))


def condition_order(reports: list[dict[str, Any]]) -> list[str]:
    """The condition labels of robustness reports in one order for every bar group: clean first,
    then by kind of condition (in order of first appearance), then by the settings' values, so that
    20% label noise comes before 40% whatever order the reports list them in."""
    kinds: list[str] = ["clean"]
    entries: dict[str, tuple] = {}
    for report in reports:
        for condition in report["conditions"]:
            kind = str(condition.get("condition", "?"))
            if kind not in kinds:
                kinds.append(kind)
            values = tuple((0, value, "") if _finite(value) else (1, 0, str(value))
                           for _, value in sorted((condition.get("settings") or {}).items()))
            entries.setdefault(_condition_label(condition), (kinds.index(kind), values))
    return sorted(entries, key=lambda label: entries[label])


# -- drawing helpers -------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise InnerloopError("innerloop report draws its figures with matplotlib, which is not installed: "
                             "pip install 'innerloop[report]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt, figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(figure)
    return buffer.getvalue()


def _legend_columns(labels: list[str], figure_width: float) -> int:
    """As many legend columns as fit the figure's width (about 14 characters per inch at size 8)."""
    per_column = max(len(label) for label in labels) + 6  # the swatch and the gap
    return max(1, min(len(labels), int(14 * figure_width) // per_column))


def _run_color(plt, index: int):
    return plt.get_cmap("tab10")(index % 10)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


# -- rendering -------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a;
       max-width: 1400px; margin: 1.5em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #d5dbe1; padding-bottom: 0.2em; margin-top: 1.8em; }
nav a { margin-right: 1em; }
.preamble { color: #56606b; font-size: 0.9em; }
.table-wrap { overflow-x: auto; margin: 0.6em 0; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #d5dbe1; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
tr:nth-child(even) td { background: #f8f9fb; }
td.nowrap { white-space: nowrap; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figure.small { display: inline-block; vertical-align: top; margin-right: 1.2em; }
figcaption { color: #56606b; font-size: 0.88em; max-width: 60em; }
code { background: #eef1f4; padding: 0 3px; border-radius: 3px; font-size: 0.92em; }
"""


def _inline_html(text: str) -> str:
    """Escape ``text`` for HTML; `backticks` become <code>, line breaks <br>."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(part)}</code>" if index % 2 else html.escape(part)
                   for index, part in enumerate(parts)).replace("\n", "<br>")


def render_html(title: str, preamble: str, sections: list[Section]) -> str:
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>", f'<p class="preamble">{_inline_html(preamble)}</p>',
             "<nav>" + "".join(f'<a href="#{section.anchor}">{html.escape(section.title)}</a>'
                               for section in sections) + "</nav>"]
    for section in sections:
        lines.append(f'<h2 id="{section.anchor}">{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append('<div class="table-wrap"><table>')
                lines.append("<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header) + "</tr>")
                for row in block.rows:
                    lines.append("<tr>" + "".join(
                        f'<td class="nowrap">{_inline_html(cell)}</td>' if column in block.nowrap
                        else f"<td>{_inline_html(cell)}</td>" for column, cell in enumerate(row)) + "</tr>")
                lines.append("</table></div>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                size = f' class="small" style="width: {block.width}px"' if block.width else ""
                lines.append(f'<figure{size}><img src="data:image/png;base64,{data}" '
                             f'alt="{html.escape(block.caption)}">'
                             f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>")
            else:
                lines.append(f"<p>{_inline_html(block)}</p>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    """One line: a continuation (``± ci``, ``(note)``) joins with a space, other lines with "; "."""
    lines = text.replace("|", "\\|").split("\n")
    return lines[0] + "".join(f" {line}" if line.startswith(("±", "(")) else f"; {line}" for line in lines[1:])


def render_markdown(title: str, preamble: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", preamble, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(map(_markdown_cell, block.header)) + " |")
                lines.append("|" + " --- |" * len(block.header))
                lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, Figure):
                lines += [f"![{Path(block.file_name).stem.replace('_', ' ')}]({block.file_name})", "",
                          f"*{block.caption}*"]
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)
