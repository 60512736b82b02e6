"""The hyperparameter-learning recipes (configs/bilevel/): splits, loading, tiny real runs, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from innerloop.bilevel.experiments.data import fashion_mnist_splits
from innerloop.bilevel.recipe import load_recipe, recipe_from_dict, run_recipe
from innerloop.cli.main import main
from innerloop.data import fashion_mnist
from innerloop.errors import ConfigError

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("configs", "bilevel").glob("*.yaml"))


@pytest.fixture(scope="module")
def fashion_mnist_root() -> str | None:
    """The real Fashion-MNIST files: ``$INNERLOOP_DATA/fashion-mnist`` or Debian's package (a failure, not a skip)."""
    root = os.environ.get("INNERLOOP_DATA")
    if root and all((Path(root) / "fashion-mnist" / name).is_file() for name, _, _ in fashion_mnist.FILES.values()):
        return root
    if all((fashion_mnist.DEBIAN_FOLDER / name).is_file() for name, _, _ in fashion_mnist.FILES.values()):
        return None
    pytest.fail("The real Fashion-MNIST files are required: apt install dataset-fashion-mnist, or put the four "
                "IDX files in $INNERLOOP_DATA/fashion-mnist/")


def test_splits_are_disjoint_seeded_and_noise_touches_only_training_labels(fashion_mnist_root):
    splits = fashion_mnist_splits(3, 400, 100, 300, label_noise=0.25, root=fashion_mnist_root)
    again = fashion_mnist_splits(3, 400, 100, 300, label_noise=0.25, root=fashion_mnist_root)
    assert torch.equal(splits.train_x, again.train_x) and torch.equal(splits.train_y, again.train_y)
    assert int(splits.noisy.sum()) == 100  # exactly 25% of 400, each moved to another class
    rows = torch.cat([splits.train_x, splits.val_x, splits.test_x])
    assert len(torch.unique(rows, dim=0)) >= len(rows) - 2  # disjoint (up to duplicate images in the corpus)
    assert splits.train_x.mean(0).abs().max() < 1e-5  # centred by the training mean
    other = fashion_mnist_splits(4, 400, 100, 300, root=fashion_mnist_root)
    assert not torch.equal(other.train_y, splits.train_y_clean) and not other.noisy.any()
    with pytest.raises(ConfigError, match="at most 70000"):
        fashion_mnist_splits(0, 70_000, 1, 1, root=fashion_mnist_root)


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem and recipe.seeds >= 5


def test_bad_recipes_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="experiment must be one of"):
        recipe_from_dict({"experiment": "bogus"})
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        recipe_from_dict({"experiment": "per-parameter-l2", "learning_rate": {}})
    with pytest.raises(ConfigError, match="regularization.outer_step"):
        recipe_from_dict({"experiment": "per-parameter-l2", "regularization": {"outer_step": 3}})
    with pytest.raises(ConfigError, match="seeds must be >= 2"):
        recipe_from_dict({"experiment": "per-parameter-l2", "seeds": 1})


TINY = {
    "per-parameter-l2": ["regularization.outer_steps=3", "regularization.inner_steps=20", "regularization.cg_iterations=5",
                         "regularization.grid_points=3", "regularization.granularities=[global,weight]"],
    "learning-rate-momentum": ["learning_rate.outer_steps=2", "learning_rate.inner_steps=10",
                               "learning_rate.hidden_units=16", "learning_rate.mode=forward"],
    "noisy-label-reweighting": ["reweighting.train_steps=60", "reweighting.hidden_units=32",
                                "reweighting.keep_grid=[0.5,0.7]", "reweighting.batch_size=50"],
}


@pytest.mark.parametrize("experiment", sorted(TINY))
def test_tiny_runs_on_real_data_report_every_method_with_a_confidence_interval(experiment, tmp_path, fashion_mnist_root):
    overrides = [f"experiment={experiment}", "seeds=2", "data.train_size=300", "data.val_size=100",
                 "data.test_size=300", "data.label_noise=0.4", *TINY[experiment]]
    recipe = recipe_from_dict({"name": "tiny"}, overrides)
    state = run_recipe(recipe, tmp_path / "run", fashion_mnist_root, progress=False)
    assert len(state["per_seed"]) == 2
    for method, entry in state["summary"].items():
        assert 0 <= entry["test_accuracy"] <= 100 and entry["test_accuracy_ci95"] >= 0, method
    best = max(entry["test_accuracy"] for entry in state["summary"].values())
    assert best > 30  # well above chance (10%) even at this size
    table = (tmp_path / "run" / "results.md").read_text()
    assert table.count("% ± ") == len(state["summary"])
    if experiment == "noisy-label-reweighting":
        reweighted = state["summary"]["learning to reweight"]["weight_on_mislabelled"]
        assert reweighted < 0.4  # less weight on the mislabelled 40% than uniform weighting gives them
    # Resume: a finished run does nothing more; another recipe in the same folder is refused.
    assert run_recipe(recipe, tmp_path / "run", fashion_mnist_root, progress=False)["per_seed"] == state["per_seed"]
    with pytest.raises(ConfigError, match="different recipe"):
        run_recipe(recipe_from_dict({"name": "tiny"}, [*overrides, "seeds=3", "data.train_size=301"]),
                   tmp_path / "run", fashion_mnist_root, progress=False)


def test_command_line_runs_a_recipe(tmp_path, fashion_mnist_root, capsys, monkeypatch):
    if fashion_mnist_root:
        monkeypatch.setenv("INNERLOOP_DATA", fashion_mnist_root)
    code = main(["train", str(RECIPES[0]), "--quiet", "--run-dir", str(tmp_path / "cli"),
                 "--set", "seeds=2", "--set", "data.train_size=200", "--set", "data.test_size=200",
                 "--set", "data.val_size=100", "--set", "regularization.outer_steps=2",
                 "--set", "regularization.inner_steps=10", "--set", "regularization.granularities=[global]",
                 "--set", "regularization.grid_points=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| hyper-gradient, global L2 |" in printed and "grid search" in printed
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["recipe"]["seeds"] == 2
    assert main(["train", str(RECIPES[0]), "--set", "regularization.bogus=1"]) == 2
