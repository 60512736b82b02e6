from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from innerloop.cli import main

RECIPE = str(Path(__file__).resolve().parents[1] / "configs" / "omniglot" / "protonet-5w1s.yaml")


def quick(steps: int = 30) -> list[str]:
    settings = ["num_threads=1", f"train.steps={steps}", "train.ways=10", "train.val_every=15",
                "train.val_episodes=20", "train.log_every=10", "eval.episodes=40"]
    return [part for setting in settings for part in ("--set", setting)] + ["--quiet"]


def test_train_then_eval_end_to_end_on_real_omniglot(tmp_path, omniglot_root, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", RECIPE, "--run-dir", str(run_dir), "--data-root", str(omniglot_root), *quick()])
    assert code == 0
    out = capsys.readouterr().out
    assert "trained 30 steps" in out and "5-way 1-shot" in out and "transductive | no" in out
    report = json.loads((run_dir / "eval-test-5w1s15q-best-40ep-seed0.json").read_text())
    assert report["episodes"] == 40 and report["method"] == "protonet" and report["split"] == "test"
    assert report["seed"] == 0 and report["transductive"] is False
    assert report["metric"] == "accuracy" and len(report["results"]) == 1
    headline = report["results"][0]
    assert headline["inner_steps"] is None
    assert 0.5 < headline["mean"] <= 1.0 and headline["ci95"] > 0  # chance: 0.2
    assert set(report["uncertainty"]) == {"nll", "brier", "ece"}
    assert 0 < report["uncertainty"]["nll"][0] < 1.6  # below the NLL of uniform guessing, log 5
    assert report["figures"] == ["eval-test-5w1s15q-best-40ep-seed0-reliability.png"]
    assert (run_dir / report["figures"][0]).stat().st_size > 10_000

    code = main(["eval", str(run_dir), "--ways", "20", "--episodes", "30", "--set", "num_threads=1",
                 "--data-root", str(omniglot_root)])
    assert code == 0
    twenty = json.loads((run_dir / "eval-test-20w1s15q-best-30ep-seed0.json").read_text())
    assert twenty["ways"] == 20 and twenty["episodes"] == 30
    assert "20-way 1-shot" in (run_dir / "eval-test-20w1s15q-best-30ep-seed0.md").read_text()


def test_regression_run_reports_nll_and_coverage_and_draws_its_bands(tmp_path, capsys):
    recipe = str(Path(RECIPE).parents[1] / "gp" / "dkt-gp.yaml")
    run_dir = tmp_path / "dkt"
    settings = ["num_threads=1", "train.steps=40", "train.val_every=20", "train.val_episodes=20",
                "train.log_every=20", "eval.episodes=30", "eval.queries=20", "optim.lr=0.01"]
    code = main(["train", recipe, "--run-dir", str(run_dir), "--quiet",
                 *[part for setting in settings for part in ("--set", setting)]])
    assert code == 0
    report = json.loads((run_dir / "eval-test-1w10s20q-best-30ep-seed0.json").read_text())
    assert report["metric"] == "mse" and report["dataset"] == "gp"
    assert set(report["uncertainty"]) == {"nll", "coverage_0.5", "coverage_0.9", "coverage_0.95"}
    low, middle, high = (report["uncertainty"][f"coverage_{level}"][0] for level in ("0.5", "0.9", "0.95"))
    assert 0 <= low <= middle <= high <= 1
    assert [name.rsplit("-", 1)[1] for name in report["figures"]] == ["bands.png", "coverage.png"]
    markdown = (run_dir / "eval-test-1w10s20q-best-30ep-seed0.md").read_text()
    assert "coverage of the central 90% interval" in markdown and "negative log-likelihood" in markdown


def test_user_errors_are_one_line_messages_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  wayz: 5\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("innerloop: error: unknown key 'train.wayz'") and "Traceback" not in err

    assert main(["train", RECIPE, "--set", "eval.ways=2000"]) == 2
    assert "2000-way episodes need 2000 classes" in capsys.readouterr().err

    assert main(["eval", str(tmp_path / "no-run")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_missing_data_says_where_to_put_it(tmp_path, capsys):
    code = main(["train", RECIPE, "--data-root", str(tmp_path), "--set", "data.download=false",
                 "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "images_background.zip" in err and str(tmp_path / "omniglot") in err


def test_eval_refuses_to_change_what_training_fixed(tmp_path, omniglot_root, capsys):
    run_dir = tmp_path / "run"
    main(["train", RECIPE, "--run-dir", str(run_dir), "--data-root", str(omniglot_root), "--no-eval",
          *quick(steps=2)])
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--set", "model.hidden_channels=32"]) == 2
    assert "'model.hidden_channels' is fixed by the trained run" in capsys.readouterr().err


def test_console_entry_point_lists_methods_and_recipes():
    result = subprocess.run([sys.executable, "-m", "innerloop", "list"], capture_output=True, text=True,
                            check=True)
    assert "protonet" in result.stdout and "configs/omniglot/protonet-20w5s.yaml" in result.stdout
    assert "promp" in result.stdout and "halfcheetah-velocity" in result.stdout
    assert "configs/rl/maml-trpo-navigation-2d.yaml" in result.stdout


@pytest.mark.parametrize("command", [["train", "missing.yaml"], ["eval", "missing-run"]])
def test_console_entry_point_exits_2_on_user_error(command):
    result = subprocess.run([sys.executable, "-m", "innerloop", *command], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("innerloop: error:")


def test_demo_runs_both_parts_and_saves_the_sinusoid_plot(tmp_path, omniglot_root, capsys):
    run_dir = tmp_path / "demo"
    code = main(["demo", "--steps", "12", "--sinusoid-steps", "200", "--run-dir", str(run_dir),
                 "--data-root", str(omniglot_root)])
    assert code == 0
    out = capsys.readouterr().out
    assert "innerloop demo (1/2)" in out and "innerloop demo (2/2)" in out
    assert "mse after 10 inner steps" in out and "protonet on omniglot" in out
    plot = tmp_path / "demo-sinusoid" / "fits.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
