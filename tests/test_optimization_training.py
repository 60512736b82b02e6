"""Gradient-based learners inside the Trainer, the evaluation runner and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from innerloop.build import build_learner, build_sampler, load_splits
from innerloop.cli import main
from innerloop.config import config_from_dict, load_config
from innerloop.evaluate import evaluate_episodes
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.errors import ConfigError
from innerloop.evaluate.run import evaluate_run
from innerloop.train.trainer import Trainer, step_seed

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def sinusoid_config(algorithm: str = "maml", steps: int = 2000, **inner) -> dict:
    return {
        "name": "sinusoid-test", "num_threads": 1, "data": {"dataset": "sinusoid"},
        "model": {"algorithm": algorithm, "backbone": "mlp", "hidden_sizes": [40, 40]},
        "inner": {"steps": 1, "eval_steps": 1, "lr": 0.01, "vectorize": True, **inner},
        "optim": {"name": "adam", "lr": 1e-3, "schedule": "constant"},
        "train": {"steps": steps, "meta_batch_size": 10, "ways": 1, "shots": 10, "queries": 10,
                  "log_every": 100, "val_every": 1000, "val_episodes": 50, "checkpoint_every": 500},
        "eval": {"ways": 1, "shots": 5, "queries": 50, "episodes": 100, "batch_size": 50,
                 "inner_steps": [0, 10]},
    }


def test_maml_on_sinusoids_trains_and_reports_mse_by_inner_steps(tmp_path):
    config = config_from_dict(sinusoid_config())
    result = Trainer(config, tmp_path, progress=False).fit()
    assert result.metric == "mse" and result.best_step in (1000, 2000)
    report = evaluate_run(tmp_path)
    assert [r.inner_steps for r in report.results] == [1, 0, 10]
    assert report.transductive is False  # an MLP without batch norm
    assert report.notes == ["inner loop: sgd at lr 0.01, second order, adapting all, 1 step(s) in training"]
    mse = {r.inner_steps: r.mean for r in report.results}
    assert mse[10] < mse[1] < mse[0], mse  # adaptation helps, more steps help more
    assert all(r.ci95 > 0 for r in report.results)
    assert (tmp_path / "eval-test-1w5s50q-best-100ep-seed0-steps1-0-10.json").is_file()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validations = [line for line in lines if "val_mse" in line]
    assert [line["step"] for line in validations] == [1000, 2000]
    lowest = min(validations, key=lambda line: line["val_mse"])  # lower MSE is better
    assert (result.best_step, result.best_val_score) == (lowest["step"], lowest["val_mse"])


def test_one_trainer_step_on_the_reptile_surrogate_is_the_reptile_update(tmp_path):
    values = {**sinusoid_config("reptile", steps=1),
              "inner": {"steps": 5, "lr": 0.01, "optimizer": "sgd", "batch_size": 4},
              "optim": {"name": "sgd", "lr": 0.5, "momentum": 0.0, "schedule": "constant"}}
    trainer = Trainer(config_from_dict(values), tmp_path, progress=False)
    start = {n: p.detach().clone() for n, p in trainer.learner.network.named_parameters()}
    episodes = trainer.sampler.sample(10, torch.Generator().manual_seed(step_seed(0, 0)))
    adapted = [trainer.learner.adapt(episodes[t].support_x, episodes[t].support_y, 1).params
               for t in range(episodes.num_tasks)]
    trainer.fit()
    for name, parameter in trainer.learner.network.named_parameters():
        mean_adapted = sum(a[name].detach() for a in adapted) / len(adapted)
        expected = start[name] + 0.5 * (mean_adapted - start[name])
        torch.testing.assert_close(parameter.detach(), expected, rtol=1e-5, atol=1e-6)


def test_maml_learns_real_omniglot_within_a_few_steps(tmp_path, omniglot_root):
    recipe = str(CONFIGS / "omniglot" / "maml-5w1s.yaml")
    settings = ["num_threads=1", "train.steps=100", "train.meta_batch_size=4", "train.val_every=100",
                "train.val_episodes=40", "train.log_every=20", "eval.episodes=40",
                "eval.inner_steps=[]"]
    overrides = [part for setting in settings for part in ("--set", setting)]
    code = main(["train", recipe, "--run-dir", str(tmp_path), "--data-root", str(omniglot_root),
                 "--quiet", *overrides])
    assert code == 0
    report = json.loads((tmp_path / "eval-test-5w1s15q-best-40ep-seed0-steps3.json").read_text())
    assert report["method"] == "maml" and report["transductive"] is True
    assert report["results"][0]["inner_steps"] == 3
    # The same network before meta-training, adapted with the same 3 steps on the same episodes.
    config = load_config(recipe, settings)
    untrained = build_learner(config)
    split = load_splits(config, omniglot_root, ["test"])["test"]
    episodes = FixedEpisodes(build_sampler(config, split, 5, 1, 15), 40, seed=0)
    baseline = evaluate_episodes(untrained, episodes).mean
    assert report["results"][0]["mean"] > baseline + 0.08, (report["results"], baseline)


@pytest.mark.parametrize("change, message", [
    ({"eval": {"ways": 20}}, "one output per label of a 5-way task"),
    ({"inner": {"order": "third"}}, "inner.order"),
    ({"inner": {"adapt": "tail"}}, "inner.adapt"),
    ({"inner": {"steps": -1}}, "inner.steps must be >= 0"),
    ({"model": {"algorithm": "protonet"}, "eval": {"inner_steps": [1]}}, "eval.inner_steps applies"),
    ({"model": {"algorithm": "metasgd"}, "inner": {"optimizer": "adam"}}, "metasgd learns"),
    ({"model": {"algorithm": "imaml"}, "inner": {"vectorize": True}}, "imaml adapts all"),
    ({"model": {"algorithm": "imaml"}, "inner": {"proximal_strength": 0}}, "proximal_strength must be > 0"),
    ({"inner": {"optimizer": "momentum", "momentum": 1.0}}, "inner.momentum must be in"),
])
def test_inner_loop_settings_are_checked(change, message):
    base = {"model": {"algorithm": "maml"}, "train": {"ways": 5}, "eval": {"ways": 5}}
    for key, values in change.items():
        base[key] = {**base.get(key, {}), **values}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(base)


@pytest.mark.parametrize("change, message", [
    ({"model": {"algorithm": "protonet", "backbone": "mlp"}, "eval": {"inner_steps": []}}, "protonet does not do regression"),
    ({"model": {"backbone": "conv4"}}, "use mlp"),
    ({"train": {"ways": 5}}, "train.ways must be 1"),
])
def test_regression_settings_are_checked(change, message):
    values = sinusoid_config()
    for key, update in change.items():
        values[key] = {**values[key], **update}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_every_optimization_recipe_is_a_valid_config():
    from innerloop.algorithms import ALGORITHMS, GradientLearner
    from innerloop.config import load_config

    recipes = {recipe: load_config(recipe) for recipe in CONFIGS.rglob("*.yaml")
               if recipe.parent.name not in ("rl", "bilevel")}  # those two kinds: tests/test_config.py
    optimization = {r: c for r, c in recipes.items()
                    if ALGORITHMS[c.model.algorithm].__module__.startswith("innerloop.algorithms.optimization")}
    # 15 Omniglot/sinusoid recipes + MAML 5-way 5-shot, MAML at the uncertainty budget, 3 ensembles,
    # the ANIL and MAML intent recipes, CACTUs-MAML
    assert len(optimization) == 24
    for recipe, config in optimization.items():
        assert config.model.algorithm in ("maml", "metasgd", "anil", "reptile", "boil", "cavia", "imaml",
                                          "mamlpp"), recipe
        assert config.model.algorithm in recipe.name or recipe.name.startswith("fomaml"), recipe


def test_sinusoid_splits_are_different_task_streams():
    from innerloop.data.sinusoid import SinusoidSplit
    from innerloop.tasks import SinusoidTasks

    def draw(name):
        return SinusoidTasks(SinusoidSplit(name), 5, 5).sample(4, torch.Generator().manual_seed(0))

    assert torch.equal(draw("test").support_y, draw("test").support_y)
    assert not torch.equal(draw("test").support_y, draw("val").support_y)


def test_imaml_and_boil_build_from_a_config_with_their_settings():
    from innerloop.build import build_learner

    imaml = build_learner(config_from_dict({"model": {"algorithm": "imaml"}, "train": {"ways": 5},
                                            "inner": {"proximal_strength": 0.5, "cg_steps": 7}}))
    assert (imaml.proximal_strength, imaml.cg_steps, imaml.cg_damping) == (0.5, 7, 0.0)
    boil = build_learner(config_from_dict({"model": {"algorithm": "boil"}, "train": {"ways": 5},
                                           "inner": {"optimizer": "momentum", "momentum": 0.5}}))
    assert all(name.startswith("body.") for name in boil.adapted_names)
    assert boil.inner_optimizer().momentum == 0.5


def test_regression_runs_saved_before_the_noise_std_existed_still_load():
    from innerloop.algorithms import MAML
    from innerloop.nn import MLP

    old = MAML(MLP(1, (8,)), outputs=1, task="regression").state_dict()
    del old["noise_log_std"]
    learner = MAML(MLP(1, (8,)), outputs=1, task="regression")
    learner.load_state_dict(old)
    assert float(learner.noise_log_std.detach()) == 0.0  # std 1, as such runs were trained
