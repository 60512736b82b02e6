"""Distributed meta-training: gloo processes on this machine against one process.

The multi-process tests start their ranks with ``torch.multiprocessing.spawn`` (a ``file://``
rendezvous in ``tmp_path``) or with ``torchrun``; each rank runs one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from innerloop.build import build_learner
from innerloop.config import config_from_dict
from innerloop.errors import InnerloopError, TrainingDiverged
from innerloop.tasks.episodes import Episodes
from innerloop.train import Trainer, load_checkpoint
from innerloop.train import trainer as trainer_module
from innerloop.train.distributed import (SINGLE_PROCESS, average_buffer_updates, average_gradients,
                                         init_distributed, rank_slice, shutdown_distributed)

REPO = Path(__file__).resolve().parents[1]
NUM_TASKS = 7  # split 4 / 3 over two ranks
WAYS, SHOTS, QUERIES, IMAGE_SIZE = 3, 1, 2, 16
GRADIENT_METHODS = {  # method: its inner-loop settings (maml differentiates through 2 steps)
    "maml": {"steps": 2, "lr": 0.4, "order": "second"},
    "reptile": {"steps": 2, "lr": 0.1},  # surrogate: params - mean_t adapted_t
    "imaml": {"steps": 2, "lr": 0.1, "cg_steps": 3},  # surrogate: mean_t implicit task gradient
}


def _join(rank: int, world_size: int, init_file: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=120))


def _spawn(worker, tmp_path: Path, *args) -> None:
    mp.spawn(worker, args=(2, tmp_path / "rendezvous", tmp_path, *args), nprocs=2, join=True)


# -- the meta-gradient ---------------------------------------------------------------------------
def tiny_learner(method: str) -> torch.nn.Module:
    """A float64 Conv-4 (8 channels, 16x16 inputs, per-task BatchNorm) under ``method``."""
    config = config_from_dict({
        "data": {"image_size": IMAGE_SIZE},
        "model": {"algorithm": method, "backbone": "conv4", "hidden_channels": 8},
        "inner": GRADIENT_METHODS[method],
        "train": {"ways": WAYS, "shots": SHOTS, "queries": QUERIES, "channels_last": False},
        "eval": {"ways": WAYS},
    })
    return build_learner(config).double()


def tiny_episodes() -> Episodes:
    generator = torch.Generator().manual_seed(0)
    return Episodes(
        support_x=torch.rand(NUM_TASKS, WAYS * SHOTS, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator,
                            dtype=torch.float64),
        support_y=torch.arange(WAYS).repeat_interleave(SHOTS).expand(NUM_TASKS, -1),
        query_x=torch.rand(NUM_TASKS, WAYS * QUERIES, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator,
                          dtype=torch.float64),
        query_y=torch.arange(WAYS).repeat_interleave(QUERIES).expand(NUM_TASKS, -1),
        ways=WAYS, shots=SHOTS, queries=QUERIES,
        class_ids=torch.arange(WAYS).expand(NUM_TASKS, -1))


def meta_gradient(method: str, tasks: slice, weight: float = 1.0) -> dict[str, torch.Tensor | None]:
    """The gradient of ``meta_loss`` on ``tasks``, averaged over the ranks with ``weight``."""
    learner = tiny_learner(method)
    loss, _ = learner.meta_loss(tiny_episodes().slice(tasks.start, tasks.stop))
    loss.backward()
    average_gradients(learner, weight)
    return {name: parameter.grad for name, parameter in learner.named_parameters()}


def batch_norm_after_one_step(tasks: slice, weight: float = 1.0) -> dict[str, torch.Tensor]:
    """A BatchNorm (and a constant buffer) after a training-mode forward pass over ``tasks``
    of 5 examples each, its buffer updates averaged over the ranks with ``weight``."""
    torch.manual_seed(0)
    features = torch.randn(NUM_TASKS, 5, 4, dtype=torch.float64)
    norm = torch.nn.BatchNorm1d(4).double()
    norm.register_buffer("constant", torch.full((3,), 0.1, dtype=torch.float64))
    before = {name: buffer.clone() for name, buffer in norm.named_buffers()}
    norm(features[tasks].flatten(0, 1))
    average_buffer_updates(norm, before, weight)
    return dict(norm.named_buffers())


def _gradient_worker(rank: int, world_size: int, init_file: Path, out: Path) -> None:
    _join(rank, world_size, init_file)
    try:
        tasks = rank_slice(NUM_TASKS, rank, world_size)
        weight = (tasks.stop - tasks.start) / NUM_TASKS
        results = {method: meta_gradient(method, tasks, weight) for method in GRADIENT_METHODS}
        results["batch_norm"] = batch_norm_after_one_step(tasks, weight)
        torch.save(results, out / f"gradients-rank{rank}.pt")
    finally:  # after an error the other rank may never arrive: leave without waiting
        shutdown_distributed(wait=sys.exc_info()[0] is None)


@pytest.fixture(scope="module")
def two_rank_gradients(tmp_path_factory) -> list[dict[str, dict[str, torch.Tensor | None]]]:
    """Per rank: each method's averaged meta-gradient, and the BatchNorm buffers of one step."""
    out = tmp_path_factory.mktemp("gradients")
    _spawn(_gradient_worker, out)
    return [torch.load(out / f"gradients-rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_two_gloo_ranks_average_to_the_meta_gradient_of_the_whole_meta_batch(method, two_rank_gradients):
    """4 + 3 tasks on two processes give the one-process meta-gradient of all 7 (float64);
    for Reptile and iMAML that of the surrogate, i.e. the update the method prescribes."""
    expected = meta_gradient(method, slice(0, NUM_TASKS))
    assert any(grad is not None and grad.abs().max() > 1e-3 for grad in expected.values())
    for rank, gradients in enumerate(two_rank_gradients):
        gradients = gradients[method]
        assert gradients.keys() == expected.keys()
        for name, grad in expected.items():
            if grad is None:  # e.g. the regression noise scale of a classifier: still no gradient
                assert gradients[name] is None, (rank, name)
                continue
            torch.testing.assert_close(gradients[name], grad, rtol=0, atol=1e-6, msg=f"rank {rank} {name}")
    for name, grad in two_rank_gradients[0][method].items():  # replicas get the very same update
        assert grad is None or torch.equal(grad, two_rank_gradients[1][method][name]), name


def test_batch_norm_statistics_take_the_update_of_the_whole_meta_batch(two_rank_gradients):
    expected = batch_norm_after_one_step(slice(0, NUM_TASKS))
    first, second = (ranks["batch_norm"] for ranks in two_rank_gradients)
    for name in expected:  # the replicas stay identical
        assert torch.equal(first[name], second[name]), name
    # the running mean moves by the mean of the whole meta-batch (equal-sized tasks)
    torch.testing.assert_close(first["running_mean"], expected["running_mean"], rtol=0, atol=1e-12)
    # the running variance by the weighted mean of the slices' variances (close, not equal)
    torch.testing.assert_close(first["running_var"], expected["running_var"], rtol=0, atol=0.05)
    assert torch.equal(first["constant"], expected["constant"])  # untouched buffers stay bitwise
    assert int(first["num_batches_tracked"]) == 1


# -- the Trainer ---------------------------------------------------------------------------------
def sinusoid_config(steps: int):
    """MAML on sinusoids, a meta-batch of 5 (3 + 2 tasks on two ranks)."""
    return config_from_dict({
        "num_threads": 1,
        "data": {"dataset": "sinusoid"},
        "model": {"algorithm": "maml", "backbone": "mlp", "hidden_sizes": [16, 16]},
        "inner": {"steps": 1, "eval_steps": 1, "lr": 0.01, "order": "second"},
        "optim": {"name": "adam", "lr": 0.01, "schedule": "constant"},
        "train": {"steps": steps, "meta_batch_size": 5, "ways": 1, "shots": 5, "queries": 5,
                  "log_every": 2, "val_every": 3, "val_episodes": 10, "checkpoint_every": 2},
        "eval": {"ways": 1, "shots": 5, "queries": 10, "episodes": 10, "batch_size": 10},
    })


def nan_on_third_call(trainer: Trainer) -> None:
    original, calls = trainer.learner.meta_loss, [0]

    def meta_loss(episodes):
        calls[0] += 1
        loss, metrics = original(episodes)
        return (loss * float("nan") if calls[0] == 3 else loss), metrics

    trainer.learner.meta_loss = meta_loss


def _trainer_worker(rank: int, world_size: int, init_file: Path, out: Path) -> None:
    _join(rank, world_size, init_file)
    writes: list[str] = []
    if rank > 0:  # record every file this rank would write through the Trainer
        def recording(what):
            return lambda *args, **kwargs: writes.append(f"{what} {args[-1] if args else ''}")

        trainer_module.save_checkpoint = recording("save_checkpoint")
        trainer_module.save_config = recording("save_config")
        trainer_module.open = recording("open")
        Path.write_text = recording("write_text")
    try:
        straight = Trainer(sinusoid_config(6), out / "straight", progress=False)
        result = straight.fit()
        Trainer(sinusoid_config(3), out / "resumed", progress=False).fit()
        resumed = Trainer(sinusoid_config(6), out / "resumed", progress=False)
        resumed.fit()
        diverging = Trainer(sinusoid_config(6), out / "diverged", progress=False)
        if rank == 1:  # only rank 1's meta-loss becomes nan, at step 3
            nan_on_third_call(diverging)
        try:
            diverging.fit()
            diverged = "no"
        except TrainingDiverged as error:
            diverged = str(error)
        torch.save({"writes": writes, "straight": straight.learner.state_dict(),
                    "resumed": resumed.learner.state_dict(), "diverged": diverged,
                    "best": [result.best_val_score, result.best_step]}, out / f"trainer-rank{rank}.pt")
    finally:  # after an error the other rank may never arrive: leave without waiting
        shutdown_distributed(wait=sys.exc_info()[0] is None)


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_train_like_one_process_write_only_on_rank_zero_resume_and_stop_together(tmp_path):
    _spawn(_trainer_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"trainer-rank{rank}.pt", weights_only=True) for rank in range(2)]
    single = Trainer(sinusoid_config(6), tmp_path / "single", progress=False)
    single_result = single.fit()

    assert ranks[1]["writes"] == []  # rank 1 wrote nothing; rank 0 wrote the whole run
    assert {p.name for p in (tmp_path / "straight").iterdir()} >= {"config.yaml", "metrics.jsonl",
                                                                    "best.pt", "last.pt"}
    last = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert last["step"] == 6
    for name, tensor in single.learner.state_dict().items():
        for rank in range(2):  # every replica holds the weights rank 0 saved
            assert torch.equal(ranks[rank]["straight"][name], last["model"][name]), (rank, name)
        # the same 6 meta-batches as one process, up to the order of float32 sums
        torch.testing.assert_close(last["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    for rank in range(2):  # 3 steps, then resumed to 6: exactly the uninterrupted run
        for name, tensor in ranks[rank]["straight"].items():
            assert torch.equal(ranks[rank]["resumed"][name], tensor), (rank, name)
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert all(torch.equal(t, resumed["model"][n]) for n, t in last["model"].items())

    distributed, one = metric_lines(tmp_path / "straight"), metric_lines(tmp_path / "single")
    assert [line["step"] for line in distributed] == [line["step"] for line in one]  # no duplicates
    for line, reference in zip(distributed, one):
        if "loss" in line:
            assert line["world_size"] == 2 and "world_size" not in reference
            assert line["loss"] == pytest.approx(reference["loss"], rel=1e-4)
            assert line["mse"] == pytest.approx(reference["mse"], rel=1e-4)
        else:
            assert line["val_mse"] == pytest.approx(reference["val_mse"], rel=1e-4)
    assert ranks[0]["best"] == ranks[1]["best"]  # validation's outcome reached every rank
    assert ranks[0]["best"][1] == single_result.best_step

    for rank in range(2):  # a nan on rank 1 stops both ranks before the update of step 3
        assert "the meta-loss became nan at step 3" in ranks[rank]["diverged"], rank
    assert load_checkpoint(tmp_path / "diverged" / "last.pt")["step"] == 2


# -- launching -----------------------------------------------------------------------------------
def test_torchrun_with_two_processes_trains_and_evaluates_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    settings = ["num_threads=1", "train.steps=40", "train.log_every=10", "train.val_every=20",
                "train.val_episodes=20", "train.checkpoint_every=20", "train.meta_batch_size=8",
                "optim.lr=0.01", "eval.episodes=20", "eval.inner_steps=[]"]
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
               "-m", "innerloop", "train", str(REPO / "configs" / "sinusoid" / "maml-sinusoid.yaml"),
               "--run-dir", str(run_dir), "--quiet",
               *[part for setting in settings for part in ("--set", setting)]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 40 steps") == 1  # rank 0 alone prints and evaluates
    assert "(2 processes, gloo)" in done.stdout
    lines = metric_lines(run_dir)
    training = [line for line in lines if "loss" in line]
    assert [line["step"] for line in training] == [10, 20, 30, 40]  # one writer: no duplicate lines
    assert all(line["world_size"] == 2 and line["tasks_per_s"] > 0 for line in training)
    assert training[-1]["mse"] < training[0]["mse"]  # it learns
    assert [line["step"] for line in lines if "val_mse" in line] == [20, 40]
    (report_file,) = run_dir.glob("eval-test-*.json")
    report = json.loads(report_file.read_text())
    assert report["episodes"] == 20 and report["metric"] == "mse"
    assert load_checkpoint(run_dir / "last.pt")["step"] == 40


# -- pieces --------------------------------------------------------------------------------------
def test_rank_slices_are_contiguous_even_and_cover_the_meta_batch_once():
    for num_tasks in range(3, 12):
        for world_size in range(1, 4):
            slices = [rank_slice(num_tasks, rank, world_size) for rank in range(world_size)]
            assert [i for part in slices for i in range(part.start, part.stop)] == list(range(num_tasks))
            sizes = [part.stop - part.start for part in slices]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(InnerloopError, match="raise train.meta_batch_size to at least 4 or lower "
                                             "--nproc_per_node to at most 2"):
        rank_slice(2, 0, 4)


def test_without_torchrun_there_is_one_process_and_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == SINGLE_PROCESS and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InnerloopError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not.*torchrun"):
        init_distributed()
