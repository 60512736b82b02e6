"""MAML-RL with a PPO outer loop (Finn et al. 2017, "Model-Agnostic Meta-Learning", §3.2, with the
clipped surrogate of Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7).

For each task ``T_i`` of a meta-batch, :meth:`collect` samples pre-update episodes ``D_i`` with
``θ``, adapts ``θ'_i = θ - inner_lr ∇ L_inner(θ; D_i)`` and samples post-update episodes ``D'_i``
with ``θ'_i``. The policies that sampled them are frozen at the start of :meth:`outer_step`
(``θ'_{i,old}``, :class:`SamplingPolicies`). The outer loop then takes ``epochs`` Adam steps (``lr``)
on the clipped surrogate of the post-update episodes,

    L(θ) = -mean_i mean_t min(r_t A'_t, clip(r_t, 1 - clip, 1 + clip) A'_t),
    r_t = π_{θ'_i(θ)}(a_t|s_t) / π_{θ'_{i,old}}(a_t|s_t)   on D'_i,

where ``θ'_i(θ)`` is recomputed from the current ``θ`` at every epoch and the gradient flows
through it (second order unless ``first_order``). ``grad_clip`` rescales the meta-gradient to at
most that norm before each Adam step. The Adam state persists across outer steps (it is part of
:meth:`state_dict`).

:meth:`meta_objective` is the loss the epochs descend (``ProMP`` adds its inner-step KL penalty);
its ``clipped_loss`` is the surrogate above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from innerloop.functional.params import Params, run
from innerloop.rl.adaptation import PolicyGradientMetaLearner, TaskRollouts, masked_mean
from innerloop.rl.rollout import Episodes


def clipped_surrogate_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor,
                           clip: float) -> Tensor:
    """``-mean_t min(r_t A_t, clip(r_t, 1 - clip, 1 + clip) A_t)`` over the steps where ``mask`` is 1,
    with ``r_t = exp(log_probs - old_log_probs)``."""
    ratio = torch.exp(log_probs - old_log_probs)
    clipped_ratio = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return -masked_mean(torch.minimum(ratio * advantages, clipped_ratio * advantages), mask)


@dataclass
class SamplingPolicies:
    """The policies that sampled one task's episodes, frozen (no graph) for an outer step:
    ``train_*[k]`` of ``θ_{k,old}`` on ``train[k]`` (``θ_{0,old} = θ``), ``valid_*`` of ``θ'_{old}`` on ``valid``."""

    train_distributions: list[Distribution]
    train_log_probs: list[Tensor]
    valid_distribution: Distribution
    valid_log_probs: Tensor


class MAMLPPO(PolicyGradientMetaLearner):
    """MAML-RL, outer loop PPO (Adam epochs on the clipped surrogate, through the adaptation)."""

    def __init__(self, policy: nn.Module, lr: float = 1e-3, epochs: int = 5, clip: float = 0.2,
                 grad_clip: float | None = None, **inner) -> None:
        super().__init__(policy, **inner)
        if lr < 0 or epochs < 1 or not 0 < clip < 1 or (grad_clip is not None and grad_clip <= 0):
            raise ValueError("the PPO outer loop needs lr >= 0, epochs >= 1, clip in (0, 1) and grad_clip None or "
                             f"positive; got lr={lr}, epochs={epochs}, clip={clip}, grad_clip={grad_clip}")
        self.lr = lr
        self.epochs = epochs
        self.clip = clip
        self.grad_clip = grad_clip
        self.optimizer = torch.optim.Adam(list(self.meta_parameters().values()), lr=lr)

    # the frozen sampling policies -------------------------------------------------------------
    @torch.no_grad()
    def _frozen(self, params: Params, episodes: Episodes) -> tuple[Distribution, Tensor]:
        distribution = run(self.policy, params, episodes.observations)
        return distribution, distribution.log_prob(episodes.actions)

    def sampling_policies(self, batch: list[TaskRollouts]) -> list[SamplingPolicies]:
        """What sampled ``batch``, recomputed from the current ``θ`` (call it before ``θ`` moves)."""
        policies = []
        for rollouts in batch:
            params = self.initial_params(detach=True)
            distributions, log_probs = [], []
            for episodes, advantages in zip(rollouts.train, rollouts.train_advantages):
                distribution, log_prob = self._frozen(params, episodes)
                distributions.append(distribution)
                log_probs.append(log_prob)
                updated = self.inner_update(params, episodes, advantages, create_graph=False)
                params = {name: value.detach() for name, value in updated.items()}
            valid_distribution, valid_log_probs = self._frozen(params, rollouts.valid)
            policies.append(SamplingPolicies(distributions, log_probs, valid_distribution, valid_log_probs))
        return policies

    # the objective ----------------------------------------------------------------------------
    def adapt_for_outer(self, rollouts: TaskRollouts, sampling: SamplingPolicies,
                        create_graph: bool) -> tuple[Params, dict[str, Tensor]]:
        """``θ'_i(θ)`` from the current ``θ``, and per-task terms the objective adds (none here)."""
        return self.adapt(self.initial_params(), rollouts, create_graph=create_graph), {}

    def meta_objective(self, batch: list[TaskRollouts], sampling: list[SamplingPolicies],
                       create_graph: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, parts)``: the loss one epoch descends and its parts (``clipped_loss``, ...)."""
        clipped_losses = []
        extras: dict[str, list[Tensor]] = {}
        for rollouts, frozen in zip(batch, sampling):
            adapted, task_extras = self.adapt_for_outer(rollouts, frozen, create_graph)
            log_probs = run(self.policy, adapted, rollouts.valid.observations).log_prob(rollouts.valid.actions)
            clipped_losses.append(clipped_surrogate_loss(log_probs, frozen.valid_log_probs, rollouts.valid_advantages,
                                                         rollouts.valid.mask, self.clip))
            for key, value in task_extras.items():
                extras.setdefault(key, []).append(value)
        parts = {"clipped_loss": torch.stack(clipped_losses).mean(),
                 **{key: torch.stack(values).mean(0) for key, values in extras.items()}}
        return self.total_loss(parts), parts

    def total_loss(self, parts: dict[str, Tensor]) -> Tensor:
        return parts["clipped_loss"]

    # the update -------------------------------------------------------------------------------
    def outer_step(self, batch: list[TaskRollouts]) -> dict[str, float]:
        parameters = list(self.meta_parameters().values())
        sampling = self.sampling_policies(batch)
        loss_before, grad_norm = float("nan"), float("nan")
        for epoch in range(self.epochs):
            loss, _ = self.meta_objective(batch, sampling, create_graph=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
            else:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters
                                                                 if p.grad is not None]))
            self.optimizer.step()
            if epoch == 0:
                loss_before, grad_norm = float(loss.detach()), float(norm)
        self.optimizer.zero_grad(set_to_none=True)
        loss_after, parts = self.meta_objective(batch, sampling, create_graph=False)
        stats = {"surrogate_loss": loss_before, "surrogate_loss_after": float(loss_after.detach()),
                 "grad_norm": grad_norm}
        return {**stats, **self.after_outer_step(parts)}

    def after_outer_step(self, parts: dict[str, Tensor]) -> dict[str, float]:
        """Statistics of the objective's parts at the updated ``θ`` (ProMP adapts its penalty here)."""
        return {"clipped_loss_after": float(parts["clipped_loss"].detach())}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
