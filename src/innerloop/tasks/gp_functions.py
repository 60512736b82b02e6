"""Regression tasks drawn from Gaussian processes with random kernels and hyperparameters.

The standard synthetic benchmark of neural processes (Garnelo et al. 2018; Kim et al. 2019) and
deep kernel transfer: a task is a function ``f ~ GP(0, k)`` observed with Gaussian noise,
``y = f(x) + noise_std * eps``, at inputs ``x ~ U[input_range]``. Each task draws

* its kernel uniformly from the split's ``kernels`` (RBF, Matérn-5/2, periodic — see
  :mod:`innerloop.functional.kernels`),
* ``lengthscale ~ U[lengthscale_range]``, ``variance ~ U[variance_range]`` and, for the periodic
  kernel, ``period ~ U[period_range]``,

and its function values at all ``shots + queries`` inputs jointly, ``f = L eps'`` with
``L L^T = K + jitter I``. The plan of a batch (:class:`GaussianProcessPlan`) stores the drawn
values, so fixed evaluation tasks are exact and cheap to slice.

Figures need the same function on a dense grid: :meth:`GaussianProcessTasks.plot_tasks` draws
the support inputs and a grid jointly, so the curve shown is the function the support came
from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.data.gaussian_process import GP_KERNELS, GaussianProcessSplit
from innerloop.functional.kernels import KERNELS
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.regression import RegressionPlotTasks, check_regression_shape, input_grid, split_generator

JITTER = 1e-5  # relative to the signal variance; keeps the Cholesky factor of K stable


@dataclass(frozen=True)
class GaussianProcessPlan:
    kernel: Tensor  # int64 [T], index into the split's kernels
    lengthscale: Tensor  # float64 [T]
    variance: Tensor  # float64 [T]
    period: Tensor  # float64 [T]
    inputs: Tensor  # float32 [T, N, 1]
    function: Tensor  # float32 [T, N, 1], noise-free
    targets: Tensor  # float32 [T, N, 1], with observation noise

    def slice(self, start: int, stop: int) -> GaussianProcessPlan:
        return GaussianProcessPlan(*(getattr(self, name)[start:stop] for name in
                                     ("kernel", "lengthscale", "variance", "period", "inputs",
                                      "function", "targets")))


def gp_covariance(split: GaussianProcessSplit, kernel: Tensor, lengthscale: Tensor,
                  variance: Tensor, period: Tensor, inputs: Tensor) -> Tensor:
    """The prior covariance ``[T, N, N]`` of each task's function at its ``inputs [T, N, 1]``."""
    x = inputs.to(torch.float64)
    covariance = torch.empty(x.shape[0], x.shape[1], x.shape[1], dtype=torch.float64)
    for index, name in enumerate(split.kernels):
        rows = kernel == index
        if not bool(rows.any()):
            continue
        options = {"lengthscale": lengthscale[rows], "variance": variance[rows]}
        if name == "periodic":
            options["period"] = period[rows]
        covariance[rows] = KERNELS[name](x[rows], x[rows], **options)
    return covariance


class GaussianProcessTasks:
    """Seeded GP regression episodes with ``shots`` support and ``queries`` query points."""

    def __init__(self, split: GaussianProcessSplit, shots: int, queries: int) -> None:
        check_regression_shape("GP", shots, queries)
        self.split = split
        self.ways, self.shots, self.queries = 1, shots, queries

    def _generator(self, generator: torch.Generator) -> torch.Generator:
        return split_generator(generator, f"gp:{self.split.name}")

    def _draw(self, num_tasks: int, generator: torch.Generator, inputs_of: callable) -> GaussianProcessPlan:
        split = self.split

        def uniform(bounds: tuple[float, float], shape: tuple[int, ...] = (num_tasks,)) -> Tensor:
            low, high = bounds
            return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

        kernel = torch.randint(0, len(split.kernels), (num_tasks,), generator=generator)
        lengthscale, variance = uniform(split.lengthscale_range), uniform(split.variance_range)
        period = uniform(split.period_range)
        inputs = inputs_of(uniform).to(torch.float32)
        covariance = gp_covariance(split, kernel, lengthscale, variance, period, inputs)
        covariance += JITTER * variance[:, None, None] * torch.eye(inputs.shape[1], dtype=torch.float64)
        factor = torch.linalg.cholesky(covariance)
        standard = torch.randn(inputs.shape, generator=generator, dtype=torch.float64)
        function = factor @ standard
        noise = split.noise_std * torch.randn(inputs.shape, generator=generator, dtype=torch.float64)
        return GaussianProcessPlan(kernel, lengthscale, variance, period, inputs,
                                   function.float(), (function + noise).float())

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> GaussianProcessPlan:
        points = self.shots + self.queries
        return self._draw(num_tasks, self._generator(generator),
                          lambda uniform: uniform(self.split.input_range, (num_tasks, points, 1)))

    def gather(self, plan: GaussianProcessPlan) -> Episodes:
        num_tasks = plan.inputs.shape[0]
        return Episodes(
            support_x=plan.inputs[:, :self.shots], support_y=plan.targets[:, :self.shots],
            query_x=plan.inputs[:, self.shots:], query_y=plan.targets[:, self.shots:],
            ways=1, shots=self.shots, queries=self.queries,
            class_ids=torch.zeros(num_tasks, 1, dtype=torch.int64),
        )

    def sample(self, num_tasks: int, generator: torch.Generator) -> Episodes:
        return self.gather(self.sample_indices(num_tasks, generator))

    def plot_tasks(self, num_tasks: int, seed: int, grid_points: int = 200) -> RegressionPlotTasks:
        """Tasks whose queries are a grid, drawn jointly with the support so the curve is the
        function the support points come from."""
        grid = input_grid(self.split.input_range, num_tasks, grid_points).to(torch.float64)

        def inputs_of(uniform: callable) -> Tensor:
            return torch.cat([uniform(self.split.input_range, (num_tasks, self.shots, 1)), grid], dim=1)

        plan = self._draw(num_tasks, self._generator(torch.Generator().manual_seed(seed)), inputs_of)
        episodes = Episodes(
            support_x=plan.inputs[:, :self.shots], support_y=plan.targets[:, :self.shots],
            query_x=plan.inputs[:, self.shots:], query_y=plan.function[:, self.shots:],
            ways=1, shots=self.shots, queries=grid_points,
            class_ids=torch.zeros(num_tasks, 1, dtype=torch.int64))
        truth = plan.function[:, self.shots:, 0]
        return RegressionPlotTasks(episodes, truth, torch.full_like(truth, self.split.noise_std))
