from __future__ import annotations

import dataclasses

import json

import pytest
import torch

from innerloop.config import config_from_dict
from innerloop.data.omniglot import omniglot_split
from innerloop.errors import InnerloopError, TrainingDiverged
from innerloop.train import Trainer, learning_rate, load_checkpoint, step_seed


def quick_config(**overrides):
    values = {
        "num_threads": 1,
        "train": {"steps": 6, "ways": 5, "shots": 1, "queries": 2, "log_every": 2, "val_every": 3,
                  "val_episodes": 10, "checkpoint_every": 2},
        "eval": {"episodes": 10, "batch_size": 10},
    }
    for section, changes in overrides.items():
        values.setdefault(section, {}).update(changes)
    return config_from_dict(values)


@pytest.fixture(scope="module")
def splits(omniglot_store):
    return {name: omniglot_split(omniglot_store, name) for name in ("train", "val")}


def crash_at(trainer: Trainer, call: int, error: Exception | None = None, loss=None) -> None:
    """On its ``call``-th use, the learner's meta_loss runs (moving BatchNorm statistics), then
    raises ``error`` or returns ``loss(real_loss, learner)`` instead of the real loss."""
    original, calls = trainer.learner.meta_loss, [0]

    def failing(episodes):
        calls[0] += 1
        result = original(episodes)
        if calls[0] == call:
            if error is not None:
                raise error
            return loss(result[0], trainer.learner), {}
        return result

    trainer.learner.meta_loss = failing


def crash_in_validation(trainer: Trainer) -> None:
    original = trainer.learner.query_logits

    def failing(episodes):
        if not trainer.learner.training:
            raise RuntimeError("simulated crash")
        return original(episodes)

    trainer.learner.query_logits = failing


def metric_lines(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("tasks_per_s", None)
    return lines


def crash_before_logging(trainer: Trainer) -> None:
    def failing(seconds):
        raise RuntimeError("simulated crash")

    trainer._log_interval = failing


@pytest.mark.parametrize("crash", ["during step 4", "during step 5", "during validation at step 3",
                                   "before the log line of step 3"])
def test_interrupted_then_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, splits, crash):
    config = quick_config(train={"log_every": 3, "val_every": 3, "checkpoint_every": 2})
    Trainer(config, tmp_path / "straight", splits=splits, progress=False).fit()

    interrupted = Trainer(config, tmp_path / "resumed", splits=splits, progress=False)
    if "validation" in crash:
        crash_in_validation(interrupted)
    elif "log line" in crash:
        crash_before_logging(interrupted)
    else:
        crash_at(interrupted, int(crash[-1]), RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit()
    saved_step = load_checkpoint(tmp_path / "resumed" / "last.pt")["step"]
    assert saved_step == {"during step 4": 3, "during step 5": 4, "during validation at step 3": 3,
                          "before the log line of step 3": 3}[crash]
    result = Trainer(config, tmp_path / "resumed", splits=splits, progress=False).fit()
    assert result.steps == 6

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["model"].keys() == resumed["model"].keys()
    for name, tensor in straight["model"].items():  # BatchNorm running statistics included
        assert torch.equal(tensor, resumed["model"][name]), name
    for key, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer"]["state"][key]["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], resumed["optimizer"]["state"][key]["exp_avg_sq"])
    assert straight["best_val_score"] == resumed["best_val_score"]
    assert metric_lines(tmp_path / "straight") == metric_lines(tmp_path / "resumed")
    best_straight = load_checkpoint(tmp_path / "straight" / "best.pt")
    best_resumed = load_checkpoint(tmp_path / "resumed" / "best.pt")
    assert best_straight["step"] == best_resumed["step"]
    assert all(torch.equal(t, best_resumed["model"][n]) for n, t in best_straight["model"].items())


def test_run_writes_config_metrics_and_best_and_last_checkpoints(tmp_path, splits):
    result = Trainer(quick_config(), tmp_path, splits=splits, progress=False).fit()
    assert {p.name for p in tmp_path.iterdir()} >= {"config.yaml", "metrics.jsonl", "best.pt", "last.pt"}
    lines = metric_lines(tmp_path)
    assert [line["step"] for line in lines if "loss" in line] == [2, 4, 6]
    assert [line["step"] for line in lines if "val_accuracy" in line] == [3, 6]
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == result.best_step and best["val_accuracy"] == result.best_val_score
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("what, bad_loss", [
    ("meta-loss became nan", lambda loss, learner: loss * float("nan")),
    ("meta-gradient norm became nan",  # finite loss, infinite derivative: d sqrt(x)/dx at 0
     lambda loss, learner: loss + torch.sqrt(0 * next(learner.parameters()).sum())),
])
def test_non_finite_loss_or_gradient_stops_the_run_and_keeps_the_last_good_state(
        tmp_path, splits, what, bad_loss):
    reference = Trainer(quick_config(train={"steps": 2}), tmp_path / "reference", splits=splits,
                        progress=False)
    reference.fit()
    trainer = Trainer(quick_config(), tmp_path / "run", splits=splits, progress=False)
    crash_at(trainer, 3, loss=bad_loss)
    with pytest.raises(TrainingDiverged, match=rf"{what} at step 3.*Lower optim.lr"):
        trainer.fit()
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["step"] == 2
    expected = load_checkpoint(tmp_path / "reference" / "last.pt")["model"]
    for name, tensor in last["model"].items():  # BatchNorm statistics of step 3 were undone
        assert torch.equal(tensor, expected[name]), name


def test_an_update_that_makes_weights_non_finite_stops_the_run(tmp_path, splits):
    trainer = Trainer(quick_config(), tmp_path, splits=splits, progress=False)
    original, calls = trainer.optimizer.step, [0]

    def exploding_step(*args, **kwargs):
        calls[0] += 1
        result = original(*args, **kwargs)
        if calls[0] == 3:
            with torch.no_grad():
                next(trainer.learner.parameters()).fill_(float("inf"))
        return result

    trainer.optimizer.step = exploding_step
    with pytest.raises(TrainingDiverged, match="update of step 3 made the weights non-finite"):
        trainer.fit()
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_a_finished_run_can_be_extended_but_not_changed(tmp_path, splits):
    Trainer(quick_config(), tmp_path, splits=splits, progress=False).fit()
    longer = Trainer(quick_config(train={"steps": 8}), tmp_path, splits=splits, progress=False).fit()
    assert longer.steps == 8
    faster = dataclasses.replace(quick_config(train={"steps": 10, "task_workers": 1, "backward_per_task": False,
                                                     "channels_last": False}), num_threads=2)  # speed settings may change
    assert Trainer(faster, tmp_path, splits=splits, progress=False).fit().steps == 10
    with pytest.raises(InnerloopError, match="different config"):
        Trainer(quick_config(optim={"lr": 0.5}), tmp_path, splits=splits, progress=False).fit()


def test_runs_checkpointed_before_generic_validation_scores_resume(tmp_path, splits):
    Trainer(quick_config(), tmp_path, splits=splits, progress=False).fit()
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    best = payload.pop("best_val_score")
    payload["best_val_accuracy"] = best  # the key an older release wrote
    for key in ("inner",):  # and its config had no inner-loop section
        payload["config"].pop(key)
    torch.save(payload, tmp_path / "last.pt")
    trainer = Trainer(quick_config(train={"steps": 8}), tmp_path, splits=splits, progress=False)
    result = trainer.fit()
    assert result.steps == 8 and result.best_val_score >= best


def test_learning_rate_schedules():
    step = quick_config(optim={"schedule": "step", "lr": 0.1, "step_size": 3, "gamma": 0.5})
    assert [learning_rate(step, s) for s in (0, 2, 3, 6)] == [0.1, 0.1, 0.05, 0.025]
    cosine = quick_config(optim={"schedule": "cosine", "lr": 0.1}, train={"steps": 10})
    assert learning_rate(cosine, 0) == pytest.approx(0.1)
    assert learning_rate(cosine, 5) == pytest.approx(0.05)
    assert learning_rate(quick_config(optim={"schedule": "constant"}), 10**6) == 1e-3
    linear = quick_config(optim={"schedule": "linear", "lr": 1.0}, train={"steps": 4})
    assert [learning_rate(linear, s) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]


def test_each_step_has_its_own_seed():
    seeds = {step_seed(0, s) for s in range(1000)} | {step_seed(1, s) for s in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2**63 for s in seeds)


def test_best_checkpoint_prefers_fewer_diverged_validation_episodes(tmp_path, splits):
    trainer = Trainer(quick_config(), tmp_path, splits=splits, progress=False)
    assert trainer._improves(0.5, non_finite=0)
    trainer.best_val_score, trainer.best_val_non_finite = 0.5, 0
    assert not trainer._improves(0.9, non_finite=2)  # a better mean over fewer episodes loses
    trainer.best_val_score, trainer.best_val_non_finite = 0.9, 2
    assert trainer._improves(0.4, non_finite=0) and trainer._improves(0.95, non_finite=2)
