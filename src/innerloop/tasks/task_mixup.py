"""Task interpolation for meta-training: MixUp across tasks, as in MLTI (Yao, Huang, Zhang, Wei,
Li, Zou & Finn, ICLR 2021, "Meta-Learning with Fewer Tasks through Task Interpolation").

With probability ``probability`` each training task ``t`` of a meta-batch is replaced by its
interpolation with a partner task ``partner_t``: for every position ``i`` of the support set
and of the query set (both tasks hold class ``c``'s examples at the same positions, since the
sampler orders examples by label with the same shots and queries per label),

    lam_t ~ Beta(alpha, alpha)
    support_x[t, i] <- lam_t * support_x[t, i] + (1 - lam_t) * partner_support_x[t, i]
    query_x[t, i]   <- lam_t * query_x[t, i]   + (1 - lam_t) * partner_query_x[t, i]

with one ``lam_t`` per task for support and query alike; labels stay those of task ``t`` (label
``c`` is the interpolation of the two tasks' ``c``-th classes: a new class, which is how MLTI
creates tasks in the non-label-sharing setting of few-shot classification). ``class_ids`` keep
task ``t``'s ids. Two choices differ from the paper, on purpose:

* the interpolation is on the inputs (images in ``[0, 1]``, or feature vectors), not on the
  hidden features of a randomly chosen layer: it then applies to every method unchanged,
  whatever its backbone does inside (MLTI's input-level variant);
* the partner tasks are a second, independent meta-batch drawn from the same sampler, not the
  other tasks of the meta-batch: the same distribution of pairs, and it also works with a
  meta-batch of one task (ProtoNet's recipes) and splits across ``torchrun`` ranks like the
  meta-batch itself.

Everything is drawn from :func:`task_mixup_seed` ``(seed, step)``, apart from the meta-batch's own
generator, so a step's clean tasks are the same with or without mixup, and a resumed run draws the
same mixes. The Trainer applies it to training meta-batches only, never to validation or test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innerloop.tasks.episodes import Episodes


def task_mixup_seed(seed: int, step: int | str) -> int:
    """A 63-bit seed for the task mixup of outer step ``step`` (or of one named use of a seed),
    independent of the meta-batch's."""
    digest = hashlib.sha256(f"innerloop-task-mixup:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class TaskMixupPlan:
    """What one meta-batch's mixup draws: ``partners`` (the sampler's plan of one partner task
    per task), ``mixed`` (bool ``[T]``, which tasks are replaced) and ``lambdas`` (float ``[T]``,
    the weight of the task itself; 1 where not mixed)."""

    partners: Any
    mixed: Tensor
    lambdas: Tensor

    def slice(self, start: int, stop: int) -> TaskMixupPlan:
        """Tasks ``start..stop-1`` (a torchrun rank's share of the meta-batch)."""
        return TaskMixupPlan(self.partners.slice(start, stop), self.mixed[start:stop],
                             self.lambdas[start:stop])


def draw_task_mixup(sampler: Any, num_tasks: int, probability: float, alpha: float,
                    seed: int) -> TaskMixupPlan:
    """Draw which of ``num_tasks`` tasks are mixed (each with ``probability``), their
    ``lam ~ Beta(alpha, alpha)``, and the partner tasks' plan from ``sampler``, all from ``seed``.
    Torch's global random stream is left where it was."""
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    generator = torch.Generator().manual_seed(seed)
    partners = sampler.sample_indices(num_tasks, generator)
    mixed = torch.rand(num_tasks, generator=generator, dtype=torch.float64) < probability
    with torch.random.fork_rng(devices=[]):  # Beta sampling has no generator argument
        # a stream of its own: seeded with ``seed`` itself, the lambdas would be drawn from the
        # very uniforms that chose the partner tasks
        torch.manual_seed(task_mixup_seed(seed, "lambdas"))
        lambdas = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((num_tasks,))
    return TaskMixupPlan(partners, mixed, torch.where(mixed, lambdas, torch.ones_like(lambdas)))


def mix_tasks(episodes: Episodes, partners: Episodes, mixed: Tensor, lambdas: Tensor) -> Episodes:
    """Each task ``t`` with ``mixed[t]`` becomes ``lambdas[t] * task + (1 - lambdas[t]) * partner``
    (support and query inputs; labels and class ids of the task); the others stay exactly as they
    are (see the module docstring)."""
    if episodes.support_x.shape != partners.support_x.shape or episodes.query_x.shape != partners.query_x.shape:
        raise ValueError(f"a task and its partner must have the same shape; got support "
                         f"{tuple(episodes.support_x.shape)} and {tuple(partners.support_x.shape)}, query "
                         f"{tuple(episodes.query_x.shape)} and {tuple(partners.query_x.shape)}")
    if not episodes.support_x.is_floating_point():
        raise ValueError("task mixup interpolates floating-point inputs (images or feature vectors); "
                         f"got {episodes.support_x.dtype}")
    if not (torch.equal(episodes.support_y, partners.support_y) and torch.equal(episodes.query_y, partners.query_y)):
        raise ValueError("task mixup pairs class c of one task with class c of the other: both tasks "
                         "must hold the same labels at the same positions (the sampler's layout)")

    def interpolate(inputs: Tensor, partner_inputs: Tensor) -> Tensor:
        shape = (-1, *[1] * (inputs.dim() - 1))
        weight = lambdas.to(device=inputs.device, dtype=inputs.dtype).view(shape)
        mixture = weight * inputs + (1 - weight) * partner_inputs
        return torch.where(mixed.to(inputs.device).view(shape), mixture, inputs)

    return Episodes(interpolate(episodes.support_x, partners.support_x), episodes.support_y,
                    interpolate(episodes.query_x, partners.query_x), episodes.query_y,
                    episodes.ways, episodes.shots, episodes.queries, episodes.class_ids)
