from __future__ import annotations

import json
import math

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
    """Make the learner's meta_loss fail (or return ``loss``) on its ``call``-th use."""
    original, calls = trainer.learner.meta_loss, [0]

    def failing(episodes):
        calls[0] += 1
        if calls[0] == call:
            if error is not None:
                raise error
            return loss, {}
        return original(episodes)

    trainer.learner.meta_loss = failing


def metric_lines(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("tasks_per_s", None)
    return lines


def test_interrupted_then_resumed_run_ends_with_the_same_weights(tmp_path, splits):
    config = quick_config()
    Trainer(config, tmp_path / "straight", splits=splits, progress=False).fit()

    interrupted = Trainer(config, tmp_path / "resumed", splits=splits, progress=False)
    crash_at(interrupted, 5, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        interrupted.fit()
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 4
    result = Trainer(config, tmp_path / "resumed", splits=splits, progress=False).fit()
    assert result.steps == 6

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["model"].keys() == resumed["model"].keys()
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    for key, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer"]["state"][key]["exp_avg"])
    assert straight["best_val_accuracy"] == resumed["best_val_accuracy"]
    assert metric_lines(tmp_path / "straight") == metric_lines(tmp_path / "resumed")


def test_run_writes_config_metrics_and_best_and_last_checkpoints(tmp_path, splits):
    result = Trainer(quick_config(), tmp_path, splits=splits, progress=False).fit()
    assert {p.name for p in tmp_path.iterdir()} >= {"config.yaml", "metrics.jsonl", "best.pt", "last.pt"}
    lines = metric_lines(tmp_path)
    assert [line["step"] for line in lines if "loss" in line] == [2, 4, 6]
    assert [line["step"] for line in lines if "val_accuracy" in line] == [3, 6]
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == result.best_step and best["val_accuracy"] == result.best_val_accuracy
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_state(tmp_path, splits):
    trainer = Trainer(quick_config(), tmp_path, splits=splits, progress=False)
    crash_at(trainer, 3, loss=torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match=r"meta-loss became nan at step 3.*Lower optim.lr"):
        trainer.fit()
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_a_finished_run_can_be_extended_but_not_changed(tmp_path, splits):
    Trainer(quick_config(), tmp_path, splits=splits, progress=False).fit()
    longer = Trainer(quick_config(train={"steps": 8}), tmp_path, splits=splits, progress=False).fit()
    assert longer.steps == 8
    with pytest.raises(InnerloopError, match="different config"):
        Trainer(quick_config(optim={"lr": 0.5}), tmp_path, splits=splits, progress=False).fit()


def test_learning_rate_schedules():
    step = quick_config(optim={"schedule": "step", "lr": 0.1, "step_size": 3, "gamma": 0.5})
    assert [learning_rate(step, s) for s in (0, 2, 3, 6)] == [0.1, 0.1, 0.05, 0.025]
    cosine = quick_config(optim={"schedule": "cosine", "lr": 0.1}, train={"steps": 10})
    assert learning_rate(cosine, 0) == pytest.approx(0.1)
    assert learning_rate(cosine, 5) == pytest.approx(0.05)
    assert learning_rate(quick_config(optim={"schedule": "constant"}), 10**6) == 1e-3


def test_each_step_has_its_own_seed():
    seeds = {step_seed(0, s) for s in range(1000)} | {step_seed(1, s) for s in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2**63 for s in seeds)
    assert not math.isnan(step_seed(0, 0))
