"""Regression task families; seeded and vectorized like the image sampler.

:class:`SinusoidTasks` draws MAML's sinusoid tasks. An episode has ``shots`` support points and
``queries`` query points, all with ``x ~ U[input_range]``; ``support_x [T, shots, 1]``,
``support_y [T, shots, 1]`` (float), ``ways = 1`` and ``class_ids [T, 1]`` all zero. The plan of
a batch (:class:`SinusoidPlan`) holds the amplitudes, phases and inputs, so fixed evaluation
tasks are cheap to keep and the true curve of any task can be drawn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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

    def slice(self, start: int, stop: int) -> SinusoidPlan:
        return SinusoidPlan(self.amplitude[start:stop], self.phase[start:stop],
                            self.inputs[start:stop])

    def targets(self, inputs: Tensor) -> Tensor:
        """``amplitude * sin(inputs - phase)`` for inputs ``[T, N, 1]``."""
        return self.amplitude[:, None, None] * torch.sin(inputs - self.phase[:, None, None])


class SinusoidTasks:
    """Seeded sinusoid regression episodes with ``shots`` support and ``queries`` query points."""

    def __init__(self, split: SinusoidSplit, shots: int, queries: int) -> None:
        if shots < 1 or queries < 1:
            raise TaskError(f"sinusoid tasks need shots >= 1 and queries >= 1, got shots={shots}, "
                            f"queries={queries}")
        self.split = split
        self.ways, self.shots, self.queries = 1, shots, queries

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> SinusoidPlan:
        # The split's name is mixed into the stream, so "val" and "test" under one seed differ.
        draw = int(torch.randint(0, 2**62, (1,), generator=generator))
        name_key = int.from_bytes(hashlib.sha256(self.split.name.encode()).digest()[:7], "little")
        generator = torch.Generator().manual_seed(draw ^ name_key)

        def uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> Tensor:
            low, high = bounds
            return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

        amplitude = uniform((num_tasks,), self.split.amplitude_range)
        phase = uniform((num_tasks,), self.split.phase_range)
        inputs = uniform((num_tasks, self.shots + self.queries, 1), self.split.input_range)
        return SinusoidPlan(amplitude.float(), phase.float(), inputs.float())

    def gather(self, plan: SinusoidPlan) -> Episodes:
        targets = plan.targets(plan.inputs)
        num_tasks = plan.inputs.shape[0]
        return Episodes(
            support_x=plan.inputs[:, :self.shots], support_y=targets[:, :self.shots],
            query_x=plan.inputs[:, self.shots:], query_y=targets[:, self.shots:],
            ways=1, shots=self.shots, queries=self.queries,
            class_ids=torch.zeros(num_tasks, 1, dtype=torch.int64),
        )

    def sample(self, num_tasks: int, generator: torch.Generator) -> Episodes:
        return self.gather(self.sample_indices(num_tasks, generator))
