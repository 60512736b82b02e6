"""Policy-gradient adaptation, the piece every gradient-based meta-RL method shares.

Inner loop (Finn et al. 2017, §3.2): on a task's pre-update episodes ``D`` sampled with ``θ``,

    θ' = θ - inner_lr · ∇_θ L_inner(θ; D),

where ``L_inner`` is the vanilla policy-gradient (REINFORCE) loss with the per-task linear
baseline, ``-mean_t[log π_θ(a_t|s_t) · A_t]`` (``inner_objective="vpg"``), or ProMP's
low-variance curvature objective ``-mean_t[π_θ(a_t|s_t) / ⊥π_θ(a_t|s_t) · A_t]``
(``"lvc"``: the same gradient, whose Hessian is the policy-gradient's own; Rothfuss et al. 2019,
§5). With ``create_graph`` the update stays differentiable (second order) so an outer objective
on the post-update episodes ``D'`` sampled with ``θ'`` differentiates through it;
``first_order`` cuts that graph. Which entries adapt is a name filter: every weight (MAML) or
only the ``context`` vector the policy reads beside the observation (CAVIA, which then starts
each task from zeros).

:class:`PolicyGradientMetaLearner` holds the policy, samples ``D`` and ``D'`` for a batch of
tasks (:meth:`collect`) and scores adaptation (:meth:`evaluate_tasks`); the methods differ only
in :meth:`outer_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from innerloop.functional.params import Params, run
from innerloop.rl.advantages import task_advantages
from innerloop.rl.envs.base import Task
from innerloop.rl.policies import CONTEXT
from innerloop.rl.rollout import Episodes, VectorRollout

INNER_OBJECTIVES = ("vpg", "lvc")
ADAPTED = ("all", "context")


@dataclass
class TaskRollouts:
    """One task's episodes: ``train[k]`` sampled with ``θ_k`` (``θ_0 = θ``), ``valid`` with the adapted ``θ_K``."""

    task: Task
    train: list[Episodes]
    train_advantages: list[Tensor]
    valid: Episodes
    valid_advantages: Tensor


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def log_probabilities(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
    """``log π(a_t | s_t)`` of every step, ``[T, B]``."""
    return run(policy, params, episodes.observations).log_prob(episodes.actions)


def inner_loss(policy: nn.Module, params: Params, episodes: Episodes, advantages: Tensor, objective: str) -> Tensor:
    log_probs = log_probabilities(policy, params, episodes)
    if objective == "vpg":
        return -masked_mean(log_probs * advantages, episodes.mask)
    if objective == "lvc":
        return -masked_mean(torch.exp(log_probs - log_probs.detach()) * advantages, episodes.mask)
    raise ValueError(f"unknown inner objective '{objective}'; choose one of {', '.join(INNER_OBJECTIVES)}")


class PolicyGradientMetaLearner:
    """Shared state and inner loop of MAML-RL, ProMP, CAVIA-RL and the pretrained baseline."""

    def __init__(self, policy: nn.Module, inner_lr: float = 0.1, inner_steps: int = 1, first_order: bool = False,
                 adapt: str = "all", inner_objective: str = "vpg", gamma: float = 0.99, gae_lambda: float = 1.0) -> None:
        if adapt not in ADAPTED:
            raise ValueError(f"adapt must be one of {', '.join(ADAPTED)}, got '{adapt}'")
        if adapt == "context" and getattr(policy, "context_dim", 0) < 1:
            raise ValueError("adapt='context' needs a policy built with context_dim >= 1 (CAVIA)")
        if inner_objective not in INNER_OBJECTIVES:
            raise ValueError(f"inner_objective must be one of {', '.join(INNER_OBJECTIVES)}, got '{inner_objective}'")
        if inner_steps < 0 or inner_lr <= 0:
            raise ValueError(f"inner_steps must be >= 0 and inner_lr positive, got {inner_steps} and {inner_lr}")
        self.policy = policy
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.adapt_mode = adapt
        self.inner_objective = inner_objective
        self.gamma = gamma
        self.gae_lambda = gae_lambda

    # parameters -------------------------------------------------------------------------------
    def meta_parameters(self) -> dict[str, nn.Parameter]:
        """What the outer loop learns: the policy's parameters."""
        return dict(self.policy.named_parameters())

    def initial_params(self, detach: bool = False) -> Params:
        """``θ`` as a parameter dict (plus CAVIA's zero context, which adapts from zero per task)."""
        params: Params = {name: (value.detach() if detach else value) for name, value in self.meta_parameters().items()}
        if self.adapt_mode == "context":
            params[CONTEXT] = torch.zeros(self.policy.context_dim, requires_grad=True)
        return params

    def adapted_names(self, params: Params) -> list[str]:
        return [CONTEXT] if self.adapt_mode == "context" else [name for name in params if name != CONTEXT]

    # inner loop -------------------------------------------------------------------------------
    def inner_update(self, params: Params, episodes: Episodes, advantages: Tensor, create_graph: bool) -> Params:
        """One step ``θ' = θ - inner_lr ∇ L_inner(θ)`` on the adapted entries."""
        names = self.adapted_names(params)
        with torch.enable_grad():
            sources = {name: params[name] if params[name].requires_grad else params[name].detach().requires_grad_()
                       for name in names}
            current = {**params, **sources}
            loss = inner_loss(self.policy, current, episodes, advantages, self.inner_objective)
            grads = torch.autograd.grad(loss, [sources[name] for name in names],
                                        create_graph=create_graph and not self.first_order)
        updated = dict(params)
        for name, grad in zip(names, grads):
            step = grad if create_graph and not self.first_order else grad.detach()
            base = sources[name] if create_graph else sources[name].detach()
            updated[name] = base - self.inner_lr * step
        return updated

    def adapt(self, params: Params, rollouts: TaskRollouts, create_graph: bool) -> Params:
        """``θ_K`` from ``θ`` through the task's recorded pre-update batches."""
        for episodes, advantages in zip(rollouts.train, rollouts.train_advantages):
            params = self.inner_update(params, episodes, advantages, create_graph)
        return params

    def advantages(self, episodes: Episodes) -> Tensor:
        return task_advantages(episodes, self.gamma, self.gae_lambda, normalize=True)

    # sampling ---------------------------------------------------------------------------------
    def collect(self, rollout: VectorRollout, tasks: Sequence[Task], episodes_per_task: int, seed: int,
                inner_steps: int | None = None) -> list[TaskRollouts]:
        """Pre-update batches for each inner step and the post-update batch, for every task."""
        steps = self.inner_steps if inner_steps is None else inner_steps
        params = [self.initial_params(detach=True) for _ in tasks]
        train: list[list[Episodes]] = [[] for _ in tasks]
        train_advantages: list[list[Tensor]] = [[] for _ in tasks]
        for step in range(steps):
            batch = rollout.sample(self.policy, params, tasks, episodes_per_task, seed=child_seed(seed, step))
            for index, episodes in enumerate(batch):
                advantages = self.advantages(episodes)
                train[index].append(episodes)
                train_advantages[index].append(advantages)
                params[index] = _detached(self.inner_update(params[index], episodes, advantages, create_graph=False))
        valid = rollout.sample(self.policy, params, tasks, episodes_per_task, seed=child_seed(seed, steps))
        return [TaskRollouts(dict(task), train[i], train_advantages[i], valid[i], self.advantages(valid[i]))
                for i, task in enumerate(tasks)]

    def evaluate_tasks(self, rollout: VectorRollout, tasks: Sequence[Task], episodes_per_task: int, seed: int,
                       steps: int) -> dict[str, Tensor]:
        """Average return per task after ``0..steps`` adaptation steps, ``"return": [steps + 1, num_tasks]``
        (and ``"success"``, the fraction of successful episodes, where the environment reports it).

        Step ``k``'s episodes are sampled with ``θ_k``, which adapted on step ``k - 1``'s episodes.
        """
        params = [self.initial_params(detach=True) for _ in tasks]
        returns = torch.zeros(steps + 1, len(tasks))
        success = torch.zeros(steps + 1, len(tasks))
        reports_success = False
        for step in range(steps + 1):
            batch = rollout.sample(self.policy, params, tasks, episodes_per_task, seed=child_seed(seed, step))
            for index, episodes in enumerate(batch):
                returns[step, index] = episodes.episode_returns().mean()
                if episodes.success is not None:
                    reports_success = True
                    success[step, index] = episodes.success.mean()
                if step < steps:
                    params[index] = _detached(self.inner_update(params[index], episodes, self.advantages(episodes),
                                                                create_graph=False))
        return {"return": returns, **({"success": success} if reports_success else {})}

    def outer_step(self, batch: list[TaskRollouts]) -> dict[str, float]:
        raise NotImplementedError

    def train_iteration(self, rollout: VectorRollout, tasks: Sequence[Task], episodes_per_task: int,
                        seed: int) -> dict[str, float]:
        """Collect, then take the outer step; returns the iteration's statistics."""
        return train_iteration(self, rollout, tasks, episodes_per_task, seed)

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])


def _detached(params: Params) -> Params:
    return {name: value.detach() for name, value in params.items()}


def child_seed(seed: int, index: int) -> int:
    """A seed for the ``index``-th sampling of a run seeded with ``seed`` (independent of the global RNG)."""
    return int(torch.randint(0, 2 ** 62, (1,), generator=torch.Generator().manual_seed(seed * 1009 + index)))


def _iteration_returns(batch: list[TaskRollouts]) -> dict[str, float]:
    """Mean episode return before adaptation (first pre-update batch) and after (post-update batch)."""
    after = float(torch.stack([rollouts.valid.episode_returns().mean() for rollouts in batch]).mean())
    before = after if not batch[0].train else float(
        torch.stack([rollouts.train[0].episode_returns().mean() for rollouts in batch]).mean())
    return {"return_before": before, "return_after": after}


def train_iteration(learner: PolicyGradientMetaLearner, rollout: VectorRollout, tasks: Sequence[Task],
                    episodes_per_task: int, seed: int) -> dict[str, float]:
    """One outer iteration: sample pre- and post-update episodes for ``tasks``, then update ``θ``."""
    batch = learner.collect(rollout, tasks, episodes_per_task, seed)
    returns = _iteration_returns(batch)
    return {**returns, **learner.outer_step(batch)}
