"""Regression task families; seeded and vectorized like the image sampler.

:class:`SinusoidTasks` draws MAML's sinusoid tasks. An episode has ``shots`` support points and
``queries`` query points, all with ``x ~ U[input_range]``; ``support_x [T, shots, 1]``,
``support_y [T, shots, 1]`` (float), ``ways = 1`` and ``class_ids [T, 1]`` all zero. The plan of
a batch (:class:`SinusoidPlan`) holds the amplitudes, phases and inputs, so fixed evaluation
tasks are cheap to keep and the true curve of any task can be drawn. With a noisy split
(:data:`~innerloop.data.sinusoid.HETEROSCEDASTIC_NOISE`) the plan also holds standard-normal
draws that ``gather`` scales by the noise std at each input.

Every regression sampler also offers ``plot_tasks``: tasks whose queries are an evenly spaced
grid over the input range, with the noise-free function and the noise std there, for figures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from innerloop.data.sinusoid import SinusoidSplit
from innerloop.errors import TaskError
from innerloop.tasks.episodes import Episodes


@dataclass(frozen=True)
class SinusoidPlan:
    amplitude: Tensor  # float32 [T]
    phase: Tensor  # float32 [T]
    inputs: Tensor  # float32 [T, shots + queries, 1]
    noise: Tensor | None = None  # float32 [T, shots + queries, 1] standard normal; noisy splits

    def slice(self, start: int, stop: int) -> SinusoidPlan:
        noise = None if self.noise is None else self.noise[start:stop]
        return SinusoidPlan(self.amplitude[start:stop], self.phase[start:stop],
                            self.inputs[start:stop], noise)

    def targets(self, inputs: Tensor) -> Tensor:
        """``amplitude * sin(inputs - phase)`` for inputs ``[T, N, 1]``."""
        return self.amplitude[:, None, None] * torch.sin(inputs - self.phase[:, None, None])


def check_regression_shape(family: str, shots: int, queries: int) -> None:
    if shots < 1 or queries < 1:
        raise TaskError(f"{family} tasks need shots >= 1 and queries >= 1, got shots={shots}, "
                        f"queries={queries}")


def split_generator(generator: torch.Generator, key: str) -> torch.Generator:
    """A generator for one draw of tasks: one number from ``generator`` mixed with a hash of
    ``key`` (the split's name), so "val" and "test" under one seed are different streams."""
    draw = int(torch.randint(0, 2**62, (1,), generator=generator))
    key_hash = int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "little")
    return torch.Generator().manual_seed(draw ^ key_hash)


class SinusoidTasks:
    """Seeded sinusoid regression episodes with ``shots`` support and ``queries`` query points."""

    def __init__(self, split: SinusoidSplit, shots: int, queries: int) -> None:
        check_regression_shape("sinusoid", shots, queries)
        self.split = split
        self.ways, self.shots, self.queries = 1, shots, queries

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> SinusoidPlan:
        generator = split_generator(generator, self.split.name)

        def uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> Tensor:
            low, high = bounds
            return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

        amplitude = uniform((num_tasks,), self.split.amplitude_range)
        phase = uniform((num_tasks,), self.split.phase_range)
        inputs = uniform((num_tasks, self.shots + self.queries, 1), self.split.input_range)
        noise = None
        if self.split.noisy:  # drawn after the rest, so the noise-free part matches sinusoid's
            noise = torch.randn(inputs.shape, generator=generator, dtype=torch.float64).float()
        return SinusoidPlan(amplitude.float(), phase.float(), inputs.float(), noise)

    def noise_std(self, inputs: Tensor) -> Tensor:
        """The observation noise std at ``inputs`` (zero for the noise-free split)."""
        return self.split.noise_floor + self.split.noise_slope * inputs.abs()

    def gather(self, plan: SinusoidPlan) -> Episodes:
        targets = plan.targets(plan.inputs)
        if plan.noise is not None:
            targets = targets + self.noise_std(plan.inputs) * plan.noise
        num_tasks = plan.inputs.shape[0]
        return Episodes(
            support_x=plan.inputs[:, :self.shots], support_y=targets[:, :self.shots],
            query_x=plan.inputs[:, self.shots:], query_y=targets[:, self.shots:],
            ways=1, shots=self.shots, queries=self.queries,
            class_ids=torch.zeros(num_tasks, 1, dtype=torch.int64),
        )

    def sample(self, num_tasks: int, generator: torch.Generator) -> Episodes:
        return self.gather(self.sample_indices(num_tasks, generator))

    def plot_tasks(self, num_tasks: int, seed: int, grid_points: int = 200) -> RegressionPlotTasks:
        """``num_tasks`` tasks with the usual support sets and a query grid over the input range."""
        plan = self.sample_indices(num_tasks, torch.Generator().manual_seed(seed))
        grid = input_grid(self.split.input_range, num_tasks, grid_points)
        episodes = self.gather(plan)
        truth = plan.targets(grid)
        episodes = replace(episodes, query_x=grid, query_y=truth, queries=grid_points)
        return RegressionPlotTasks(episodes, truth[..., 0], self.noise_std(grid)[..., 0].expand(num_tasks, -1))


@dataclass(frozen=True)
class RegressionPlotTasks:
    """Tasks for figures: ``episodes`` whose queries are a sorted grid, the noise-free function
    there (``truth [T, G]``) and the observation noise std (``noise_std [T, G]``)."""

    episodes: Episodes
    truth: Tensor
    noise_std: Tensor


def input_grid(input_range: tuple[float, float], num_tasks: int, points: int) -> Tensor:
    """``points`` evenly spaced inputs over ``input_range`` for each task: ``[T, points, 1]``."""
    low, high = input_range
    return torch.linspace(low, high, points).view(1, -1, 1).expand(num_tasks, -1, -1).contiguous()
