"""innerloop report: two small real runs (a ProtoNet on Omniglot, MAML on sinusoids), evaluated,
one with a robustness report, compared on one HTML page and its Markdown twin."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from innerloop.cli import main
from innerloop.evaluate.uncertainty import ReliabilityBins, reliability_bins

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SECTIONS = ("Runs", "Results", "Learning curves", "Reliability diagrams", "Robustness")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONDITIONS = [
    {"condition": "clean", "label": "clean", "settings": {}, "mean": 0.61, "ci95": 0.021},
    {"condition": "label_noise", "label": "20% support label noise", "settings": {"rate": 0.2},
     "mean": 0.5475, "ci95": 0.024},
    {"condition": "adversarial", "label": "PGD on the support set, eps 0.1",
     "settings": {"epsilon": 0.1, "steps": 5}, "mean": 0.3, "ci95": 0.0195},
]


def settings(*assignments: str) -> list[str]:
    return [part for assignment in assignments for part in ("--set", assignment)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, omniglot_root) -> tuple[Path, Path]:
    """A 20-step ProtoNet on real Omniglot (evaluated 5-way and 10-way, with a robustness report)
    and a 40-step MAML on sinusoids (evaluated after 1, 0 and 10 inner steps)."""
    root = tmp_path_factory.mktemp("runs")
    protonet, maml = root / "protonet", root / "maml"
    assert main(["train", str(CONFIGS / "omniglot" / "protonet-5w1s.yaml"), "--run-dir", str(protonet),
                 "--data-root", str(omniglot_root), "--quiet",
                 *settings("num_threads=1", "train.steps=20", "train.ways=5", "train.val_every=10",
                           "train.val_episodes=10", "train.log_every=5", "eval.episodes=20",
                           "model.hidden_channels=16")]) == 0
    assert main(["eval", str(protonet), "--ways", "10", "--episodes", "20", "--data-root", str(omniglot_root),
                 *settings("num_threads=1")]) == 0
    assert main(["train", str(CONFIGS / "sinusoid" / "maml-sinusoid.yaml"), "--run-dir", str(maml), "--quiet",
                 *settings("train.steps=40", "train.val_every=20", "train.log_every=10",
                           "train.val_episodes=20", "eval.episodes=20")]) == 0
    robustness = {"kind": "robustness", "method": "protonet", "dataset": "omniglot", "split": "test",
                  "ways": 5, "shots": 1, "queries": 15, "episodes": 20, "seed": 0, "checkpoint": "best.pt",
                  "step": 20, "metric": "accuracy", "date": "2026-11-29", "conditions": CONDITIONS}
    (protonet / "robustness-test-5w1s15q-best-20ep-seed0.json").write_text(json.dumps(robustness))
    return protonet, maml


def section(text: str, title: str, markdown: bool) -> str:
    """The text of one section: from its heading to the next one."""
    start = text.index(f"## {title}\n" if markdown else f">{title}</h2>")
    following = [text.index(f"## {other}\n" if markdown else f">{other}</h2>")
                 for other in SECTIONS if other != title]
    return text[start:min([index for index in following if index > start], default=len(text))]


def embedded_pngs(page: str) -> list[bytes]:
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert all(source.startswith("data:image/png;base64,") for source in sources)  # nothing linked
    return [base64.b64decode(source.removeprefix("data:image/png;base64,"), validate=True) for source in sources]


def test_report_compares_real_runs_on_one_self_contained_page(runs, tmp_path, capsys):
    protonet, maml = runs
    out = tmp_path / "report"
    assert main(["report", str(protonet), str(maml), "--out", str(out), "--title", "Two runs"]) == 0
    printed = capsys.readouterr().out
    assert f"written: {out / 'report.html'}" in printed and f"written: {out / 'report.md'}" in printed
    page = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert "<title>Two runs</title>" in page and markdown.startswith("# Two runs\n")

    # every section, in order, in both files
    for headings in ([page.index(f">{title}</h2>") for title in SECTIONS],
                     [markdown.index(f"## {title}\n") for title in SECTIONS]):
        assert headings == sorted(headings)

    # figures: learning curves (two panels: accuracy and mse), reliability (three panels: two
    # Omniglot evaluations with bins, one sinusoid evaluation with interval coverage), robustness
    pngs = embedded_pngs(page)
    assert len(pngs) == 3 and all(png.startswith(PNG_SIGNATURE) for png in pngs)
    sizes = [Image.open(io.BytesIO(png)).size for png in pngs]
    assert sizes[0][0] == 1280 and sizes[1][0] == 3 * 320  # 100 dpi: 12.8 in; 3 panels of 3.2 in
    assert all(200 < height < 1000 for _, height in sizes)
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert linked == ["learning_curves.png", "reliability.png", "robustness.png"]
    assert [(out / name).read_bytes() for name in linked] == pngs  # the same figures as the page

    # Runs: both runs, their method, dataset and trained steps
    runs_table = section(markdown, "Runs", markdown=True)
    assert re.search(r"\| protonet \| protonet \| omniglot \| conv4 \(16 channels\) \| 20 \| 5 / 1 / 5 \|", runs_table)
    assert re.search(r"\| maml \| maml \| sinusoid \| mlp \(40, 40\) \| 40 \| 1 / 10 / 10 \|", runs_table)

    # Results: one row per evaluation report, each with its numbers as the JSON holds them
    results = section(markdown, "Results", markdown=True)
    reports = {path: json.loads(path.read_text()) for run in runs for path in sorted(run.glob("eval-*.json"))}
    assert len(reports) == 3
    rows = [line for line in results.splitlines() if line.startswith(("| protonet |", "| maml |"))]
    assert len(rows) == len(reports)
    for path, report in reports.items():
        if report["metric"] == "accuracy":
            scores = "; ".join(f"{100 * r['mean']:.2f}% ± {100 * r['ci95']:.2f}%" for r in report["results"])
            ece, ece_ci95 = report["uncertainty"]["ece"]
            expected = [f"| {report['ways']} / 1 / 15 | 20 |", f"| accuracy | {scores} |",
                        f"| {ece:.4f} ± {ece_ci95:.4f} |"]
        else:
            assert [r["inner_steps"] for r in report["results"]] == [1, 0, 10]
            scores = "; ".join(f"{r['mean']:.4f} ± {r['ci95']:.4f}" for r in report["results"])
            expected = ["| 1 / 10 / 100 | 20 |", "| 1; 0; 10 | mse |", f"| {scores} |"]
        assert sum(all(part in row for part in expected) for row in rows) == 1, (path.name, expected)
        headline = report["results"][0]
        text = (f"{100 * headline['mean']:.2f}% ± {100 * headline['ci95']:.2f}%" if report["metric"] == "accuracy"
                else f"{headline['mean']:.4f} ± {headline['ci95']:.4f}")
        assert text in section(page, "Results", markdown=False)

    # Robustness: every condition with its score and its change against clean, in both files
    for text, is_markdown in ((markdown, True), (page, False)):
        robustness = section(text, "Robustness", markdown=is_markdown)
        for condition in CONDITIONS:
            assert condition["label"] in robustness
            assert f"{100 * condition['mean']:.2f}% ± {100 * condition['ci95']:.2f}%" in robustness
        assert "-6.25 points" in robustness and "-31.00 points" in robustness  # 54.75 - 61, 30 - 61
        assert "No robustness evaluations" not in robustness


def test_sections_without_data_still_appear_and_say_what_would_fill_them(runs, tmp_path):
    _, maml = runs
    out = tmp_path / "one"
    assert main(["report", str(maml), "--out", str(out)]) == 0
    page, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
    for text, is_markdown in ((markdown, True), (page, False)):
        assert all((f"## {title}\n" if is_markdown else f">{title}</h2>") in text for title in SECTIONS)
        robustness = section(text, "Robustness", markdown=is_markdown)
        assert "No robustness evaluations in these runs" in robustness and "innerloop robustness RUN_DIR" in robustness
    assert "<title>innerloop: comparison of 1 run</title>" in page
    assert len(embedded_pngs(page)) == 2  # learning curves, reliability
    assert not (out / "robustness.png").exists()

    # a run that has only started: config and an empty log
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(maml / "config.yaml", fresh / "config.yaml")
    (fresh / "metrics.jsonl").write_text("")
    assert main(["report", str(fresh), "--out", str(tmp_path / "fresh-report")]) == 0
    markdown = (tmp_path / "fresh-report" / "report.md").read_text()
    assert "No evaluation reports in these runs: run `innerloop eval RUN_DIR`" in section(markdown, "Results", True)
    assert "No training log lines" in section(markdown, "Learning curves", True)
    assert "No calibration data" in section(markdown, "Reliability diagrams", True)
    assert "| fresh | maml | sinusoid |" in section(markdown, "Runs", True)
    assert embedded_pngs((tmp_path / "fresh-report" / "report.html").read_text()) == []


def test_old_evaluation_reports_and_cross_domain_evaluations_are_listed(tmp_path):
    """A report from before inner-step counts (top-level accuracy/ci95) and one on a dataset the
    run did not train on; a torn last log line is skipped."""
    run = tmp_path / "protonet-omniglot-5w5s"
    run.mkdir()
    (run / "config.yaml").write_text("name: p\ndata:\n  dataset: omniglot\nmodel:\n  algorithm: protonet\n"
                                     "  backbone: conv4\n  hidden_channels: 64\ntrain:\n  steps: 200\n"
                                     "  ways: 60\n  shots: 5\n  queries: 5\n  meta_batch_size: 1\n")
    (run / "metrics.jsonl").write_text(
        '{"step": 100, "loss": 0.5, "accuracy": 0.86, "lr": 0.001, "tasks_per_s": 1.0}\n'
        '{"step": 100, "val_accuracy": 0.9, "val_ci95": 0.01}\n'
        '{"step": 200, "val_accuracy": 0.95, "val_ci95": 0.008}\n{"step": 3')
    legacy = {"method": "protonet", "transductive": False, "dataset": "omniglot", "split": "test", "ways": 5,
              "shots": 5, "queries": 15, "episodes": 1000, "seed": 0, "accuracy": 0.9972933,
              "ci95": 0.0006097, "checkpoint": "best.pt", "step": 200, "seconds": 60.0, "date": "2026-11-29"}
    (run / "eval-test-5w5s-best-1000ep-seed0.json").write_text(json.dumps(legacy))
    cross = {**legacy, "dataset": "fashion-mnist", "metric": "accuracy", "accuracy": None, "ci95": None,
             "results": [{"inner_steps": None, "mean": 0.7012, "ci95": 0.0123, "non_finite": 0}]}
    (run / "eval-test-5w5s15q-best-1000ep-seed0-fashion-mnist.json").write_text(json.dumps(cross))
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    results = section(markdown, "Results", markdown=True)
    assert ("| protonet-omniglot-5w5s | omniglot | test | 5 / 5 / 15 | 1000 | best.pt; step 200 | — | accuracy "
            "| 99.73% ± 0.06% |") in results
    assert "| fashion-mnist (cross-domain) | test |" in results and "70.12% ± 1.23%" in results
    assert "95.00% ± 0.80% (accuracy, step 200)" in section(markdown, "Runs", True)  # best validation
    assert "| 200 of 200 |" not in markdown and "| 200 |" in section(markdown, "Runs", True)


def test_a_folder_that_is_not_a_run_directory_is_refused_with_what_a_run_holds(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory (no such folder)" in err and "config.yaml, metrics.jsonl" in err

    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text("name: x\n")
    assert main(["report", str(half), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("innerloop: error: ") and "Traceback" not in err
    assert f"{half} is not a run directory: it has no metrics.jsonl;" in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_without_matplotlib_the_report_names_the_extra_to_install(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["report", str(runs[1]), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'innerloop[report]'" in capsys.readouterr().err


def test_reliability_bins_survive_a_json_round_trip():
    import torch

    confidence = torch.tensor([0.05, 0.3, 0.35, 0.9, 0.95, 1.0], dtype=torch.float64)
    correct = torch.tensor([False, True, False, True, True, True])
    bins = reliability_bins(confidence, correct, bins=5)
    stored = json.loads(json.dumps(bins.to_dict()))
    assert stored["counts"] == [1, 2, 0, 0, 3]
    assert stored["accuracy"][1] == 0.5 and stored["mean_confidence"][2] is None  # empty bin
    again = ReliabilityBins.from_dict(stored)
    assert torch.equal(again.counts, bins.counts) and torch.equal(again.edges, bins.edges)
    assert again.expected_calibration_error == pytest.approx(bins.expected_calibration_error, abs=1e-15)
    # by hand: (1/6)|0 - 0.05| + (2/6)|0.5 - 0.325| + (3/6)|1 - 0.95|
    assert bins.expected_calibration_error == pytest.approx(0.05 / 6 + 2 * 0.175 / 6 + 3 * 0.05 / 6)


def test_robustness_bars_follow_one_condition_order_whatever_order_reports_list_them():
    from innerloop.evaluate.comparison_report import condition_order

    first = {"conditions": [CONDITIONS[0], {"condition": "label_noise", "label": "40% support label noise",
                                            "settings": {"rate": 0.4}, "mean": 0.4, "ci95": 0.01}, CONDITIONS[2]]}
    second = {"conditions": [CONDITIONS[2], CONDITIONS[1], CONDITIONS[0],
                             {"condition": "imbalance", "label": "2 of 5 classes with 1 support shot",
                              "settings": {"minority_fraction": 0.4, "minority_shots": 1}, "mean": 0.5, "ci95": 0.01}]}
    assert condition_order([first, second]) == [
        "clean", "20% support label noise", "40% support label noise", "PGD on the support set, eps 0.1",
        "2 of 5 classes with 1 support shot"]
