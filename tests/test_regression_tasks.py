"""Regression task families: GP functions and the heteroscedastic sinusoid, against their definitions."""

from __future__ import annotations

import pytest
import torch

from innerloop.data import DATASETS
from innerloop.data.gaussian_process import GaussianProcessSplit
from innerloop.errors import TaskError
from innerloop.functional.kernels import matern52_kernel, periodic_kernel, rbf_kernel
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.gp_functions import GaussianProcessTasks
from innerloop.tasks.regression import SinusoidTasks


def test_gp_tasks_are_seeded_and_splits_differ():
    tasks = GaussianProcessTasks(DATASETS["gp"].split(None, "test"), shots=5, queries=7)
    first = FixedEpisodes(tasks, 6, seed=3)
    again = FixedEpisodes(tasks, 6, seed=3)
    batch, same = next(first.batches(6)), next(again.batches(6))
    assert batch.support_x.shape == (6, 5, 1) and batch.query_y.shape == (6, 7, 1)
    assert torch.equal(batch.support_y, same.support_y) and torch.equal(batch.query_x, same.query_x)
    val = GaussianProcessTasks(DATASETS["gp"].split(None, "val"), shots=5, queries=7)
    assert not torch.equal(next(FixedEpisodes(val, 6, seed=3).batches(6)).support_y, batch.support_y)
    # batches are slices of one fixed list
    assert torch.equal(torch.cat([b.query_y for b in first.batches(4)]), batch.query_y)


@pytest.mark.parametrize("kernel, covariance", [
    ("rbf", lambda x: rbf_kernel(x, x, 0.5, 1.2)),
    ("matern52", lambda x: matern52_kernel(x, x, 0.5, 1.2)),
    ("periodic", lambda x: periodic_kernel(x, x, 0.5, 1.2, 1.5)),
])
def test_gp_function_values_have_the_kernel_as_covariance(kernel, covariance):
    split = GaussianProcessSplit("train", kernels=(kernel,), lengthscale_range=(0.5, 0.5),
                                 variance_range=(1.2, 1.2), period_range=(1.5, 1.5))
    tasks = GaussianProcessTasks(split, shots=1, queries=1)
    drawn = tasks.plot_tasks(4000, seed=0, grid_points=5)  # every task on the same grid
    values = drawn.truth.to(torch.float64)  # [4000, 5]
    empirical = values.T @ values / values.shape[0]
    expected = covariance(drawn.episodes.query_x[0].to(torch.float64))
    assert torch.allclose(empirical, expected, atol=0.12), (empirical, expected)


def test_gp_observation_noise_has_the_split_std():
    split = GaussianProcessSplit("train", kernels=("rbf",), noise_std=0.3)
    plan = GaussianProcessTasks(split, shots=10, queries=10).sample_indices(500, torch.Generator().manual_seed(0))
    residual = (plan.targets - plan.function).to(torch.float64)
    assert residual.std().item() == pytest.approx(0.3, rel=0.03)


def test_gp_split_rejects_unknown_kernels():
    with pytest.raises(TaskError, match="subset of rbf, matern52, periodic"):
        GaussianProcessSplit("train", kernels=("cosine",))


def test_heteroscedastic_sinusoid_noise_grows_with_distance_from_origin():
    split = DATASETS["sinusoid-heteroscedastic"].split(None, "train")
    tasks = SinusoidTasks(split, shots=10, queries=40)
    plan = tasks.sample_indices(2000, torch.Generator().manual_seed(0))
    episodes = tasks.gather(plan)
    inputs = torch.cat([episodes.support_x, episodes.query_x], 1)
    targets = torch.cat([episodes.support_y, episodes.query_y], 1)
    residual = (targets - plan.targets(inputs)).flatten()
    distance = inputs.abs().flatten()
    for low, high in ((0.0, 0.5), (2.0, 2.5), (4.5, 5.0)):
        rows = (distance >= low) & (distance < high)
        middle = (low + high) / 2
        expected = 0.05 + 0.1 * middle  # std grows linearly; the bin average is close to the middle
        assert residual[rows].std().item() == pytest.approx(expected, rel=0.05)
    # the noise-free part is the plain sinusoid's, task for task
    plain = SinusoidTasks(DATASETS["sinusoid"].split(None, "train"), shots=10, queries=40)
    clean = plain.sample_indices(2000, torch.Generator().manual_seed(0))
    assert torch.equal(clean.amplitude, plan.amplitude) and torch.equal(clean.inputs, plan.inputs)


def test_plot_tasks_put_queries_on_a_sorted_grid_with_the_true_function():
    tasks = SinusoidTasks(DATASETS["sinusoid"].split(None, "test"), shots=5, queries=10)
    drawn = tasks.plot_tasks(3, seed=0, grid_points=50)
    grid = drawn.episodes.query_x[..., 0]
    assert grid.shape == (3, 50) and bool((grid.diff(dim=1) > 0).all())
    assert grid[0, 0] == -5 and grid[0, -1] == 5
    assert torch.equal(drawn.episodes.query_y[..., 0], drawn.truth)
    assert bool((drawn.noise_std == 0).all())
