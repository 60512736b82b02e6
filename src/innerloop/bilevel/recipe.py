"""Hyperparameter-learning recipes (``configs/bilevel/*.yaml``): load, run over seeds, report.

A recipe names an ``experiment`` and its settings section; ``innerloop train RECIPE`` recognises
it by that key. Every seed draws its own disjoint Fashion-MNIST splits and runs every method of
the experiment — hyper-gradient learning and its search baselines — on them; results are written
after every seed (``results.json``, atomically) so an interrupted run resumes at the next seed,
and ``results.md`` reports each method's test accuracy with a 95% Student-t confidence interval
over seeds (:func:`~innerloop.evaluate.protocol.mean_and_t_ci95`: a few seeds), its cost (gradient evaluations or training runs) and measured seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from innerloop.config import _apply_override, _build, read_recipe
from innerloop.errors import ConfigError
from innerloop.evaluate.protocol import mean_and_t_ci95


@dataclass
class DataSection:
    dataset: str = "fashion-mnist"
    train_size: int = 500
    val_size: int = 500
    test_size: int = 10_000
    label_noise: float = 0.0
    root: str | None = None


@dataclass
class RegularizationSettings:
    granularities: list[str] = field(default_factory=lambda: ["global", "feature", "weight"])
    initial_log_l2: float = -4.0
    outer_steps: int = 40
    outer_lr: float = 0.1
    inner_steps: int = 100
    cg_iterations: int = 20
    grid_points: int = 10
    grid_low: float = -10.0
    grid_high: float = 1.0


@dataclass
class LearningRateSettings:
    mode: str = "unrolled"
    truncate: int = 20
    initial_lr: float = 0.01
    initial_momentum: float = 0.5
    outer_steps: int = 20
    outer_lr: float = 0.2
    inner_steps: int = 100
    hidden_units: int = 100
    lr_low: float = 0.001
    lr_high: float = 1.0


@dataclass
class ReweightingSettings:
    hidden_units: int = 100
    lr: float = 0.1
    batch_size: int = 100
    train_steps: int = 2000
    clean_batch: int = 100
    keep_grid: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8])


EXPERIMENTS = {  # experiment -> (settings section, settings class)
    "per-parameter-l2": ("regularization", RegularizationSettings),
    "learning-rate-momentum": ("learning_rate", LearningRateSettings),
    "noisy-label-reweighting": ("reweighting", ReweightingSettings),
}


@dataclass
class BilevelRecipe:
    name: str
    experiment: str
    data: DataSection
    settings: Any
    seeds: int = 5
    num_threads: int = 1

    def as_dict(self) -> dict[str, Any]:
        section = EXPERIMENTS[self.experiment][0]
        return {"name": self.name, "experiment": self.experiment, "data": dataclasses.asdict(self.data),
                section: dataclasses.asdict(self.settings), "seeds": self.seeds, "num_threads": self.num_threads}


def is_bilevel_recipe(values: Any) -> bool:
    return isinstance(values, dict) and "experiment" in values


def recipe_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> BilevelRecipe:
    tree = copy.deepcopy(values or {})
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    experiment = tree.get("experiment")
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {experiment!r}")
    section, settings_class = EXPERIMENTS[experiment]
    allowed = {"name", "experiment", "data", "seeds", "num_threads", section}
    unknown = sorted(set(tree) - allowed)
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' for experiment {experiment}; keys allowed at the top level: "
                          f"{', '.join(sorted(allowed))}")
    recipe = BilevelRecipe(
        name=str(tree.get("name") or experiment), experiment=experiment,
        data=_build(DataSection, tree.get("data") or {}, "data"),
        settings=_build(settings_class, tree.get(section) or {}, section),
        seeds=int(tree.get("seeds", 5)), num_threads=int(tree.get("num_threads", 1)))
    if recipe.data.dataset != "fashion-mnist":
        raise ConfigError(f"data.dataset: the hyperparameter recipes run on fashion-mnist, got {recipe.data.dataset!r}")
    if recipe.seeds < 2:
        raise ConfigError(f"seeds must be >= 2 (a confidence interval needs two), got {recipe.seeds}")
    if recipe.num_threads < 1:
        raise ConfigError(f"num_threads must be >= 1, got {recipe.num_threads}")
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> BilevelRecipe:
    return recipe_from_dict(read_recipe(path), overrides)


def _run_seed(recipe: BilevelRecipe, seed: int, data_root: str | None) -> dict[str, dict[str, Any]]:
    from innerloop.bilevel.experiments import learning_rate, regularization, reweighting
    from innerloop.bilevel.experiments.data import fashion_mnist_splits

    data = recipe.data
    splits = fashion_mnist_splits(seed, data.train_size, data.val_size, data.test_size, data.label_noise,
                                  root=data.root or data_root)
    settings = dataclasses.asdict(recipe.settings)
    if recipe.experiment == "per-parameter-l2":
        return regularization.run_seed(splits, settings)
    if recipe.experiment == "learning-rate-momentum":
        return learning_rate.run_seed(splits, settings, seed)
    return reweighting.run_seed(splits, settings, seed)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def search_baseline(methods: list[str]) -> str:
    """The search baseline every method is compared with, paired over seeds: the first whose name
    says "search"."""
    return next((method for method in methods if "search" in method), methods[-1])


def summarize(recipe: BilevelRecipe, per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method: test accuracy (%) mean and 95% CI over seeds, its paired difference from the
    search baseline on the same splits (mean and CI), and means of the other numbers."""
    summary: dict[str, dict[str, Any]] = {}
    baseline = search_baseline(list(per_seed[0]))
    baseline_accuracy = torch.tensor([100 * seed_results[baseline]["test_accuracy"] for seed_results in per_seed])
    for method in per_seed[0]:
        rows = [seed_results[method] for seed_results in per_seed]
        accuracies = torch.tensor([100 * row["test_accuracy"] for row in rows])
        accuracy, interval = mean_and_t_ci95(accuracies)
        difference, difference_interval = mean_and_t_ci95(accuracies - baseline_accuracy)
        entry: dict[str, Any] = {"test_accuracy": accuracy, "test_accuracy_ci95": interval,
                                 "difference_from_search": difference, "difference_from_search_ci95": difference_interval}
        for key, value in rows[0].items():
            if key != "test_accuracy" and isinstance(value, (int, float)):
                entry[key] = sum(row[key] for row in rows) / len(rows)
        summary[method] = entry
    return summary


def markdown(recipe: BilevelRecipe, summary: dict[str, dict[str, Any]], seeds_done: int) -> str:
    cost_key = next((key for key in ("gradient_evaluations", "training_runs") if key in next(iter(summary.values()))), None)
    lines = [f"# {recipe.name}: {recipe.experiment}", "",
             f"Fashion-MNIST, {recipe.data.train_size} training / {recipe.data.val_size} validation / "
             f"{recipe.data.test_size} test examples, label noise {recipe.data.label_noise:g}; "
             f"{seeds_done} seeds (disjoint seeded splits), ± 95% CI over seeds; the difference is paired "
             f"over the same splits.", "",
             f"| method | test accuracy | vs {search_baseline(list(summary))} | "
             f"{cost_key.replace('_', ' ') if cost_key else 'cost'} | seconds (mean) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for method, entry in summary.items():
        cost = f"{entry[cost_key]:.0f}" if cost_key and cost_key in entry else "—"
        lines.append(f"| {method} | {entry['test_accuracy']:.2f}% ± {entry['test_accuracy_ci95']:.2f}% | "
                     f"{entry['difference_from_search']:+.2f} ± {entry['difference_from_search_ci95']:.2f} | {cost} | "
                     f"{entry.get('seconds', 0.0):.1f} |")
    return "\n".join(lines) + "\n"


def run_recipe(recipe: BilevelRecipe, run_dir: Path, data_root: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every seed; returns the contents of ``results.json``."""
    torch.set_num_threads(recipe.num_threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_dir / "results.json"
    state: dict[str, Any] = {"recipe": recipe.as_dict(), "per_seed": []}
    if results_path.is_file():
        previous = json.loads(results_path.read_text())
        if previous.get("recipe") != recipe.as_dict():
            raise ConfigError(f"{run_dir} holds results of a different recipe: use another --run-dir or delete it")
        state = previous
    for seed in range(len(state["per_seed"]), recipe.seeds):
        began = time.perf_counter()
        state["per_seed"].append(_run_seed(recipe, seed, data_root))
        state["summary"] = summarize(recipe, state["per_seed"]) if len(state["per_seed"]) >= 2 else {}
        _write_atomically(results_path, json.dumps(state, indent=1))
        if progress:
            accuracies = ", ".join(f"{method}: {100 * value['test_accuracy']:.2f}%"
                                   for method, value in state["per_seed"][-1].items())
            print(f"seed {seed + 1}/{recipe.seeds} ({time.perf_counter() - began:.0f} s): {accuracies}", flush=True)
    state["summary"] = summarize(recipe, state["per_seed"])
    _write_atomically(results_path, json.dumps(state, indent=1))
    _write_atomically(run_dir / "results.md", markdown(recipe, state["summary"], len(state["per_seed"])))
    return state
