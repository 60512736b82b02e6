"""ProMP (Rothfuss et al. 2019, "ProMP: Proximal Meta-Policy Search", §5-6 and Algorithm 1).

MAML-RL whose inner step takes the low-variance curvature (LVC) objective and whose outer loop is
the PPO-style clipped meta-objective with a KL penalty on every inner step. With ``θ_o`` the
parameters that sampled the batch (frozen at the start of :meth:`outer_step`), ``D_{i,k}`` the
pre-update episodes of task ``i`` for inner step ``k`` (sampled with ``θ_{k,o}``, ``θ_{0,o} = θ_o``)
and ``D'_i`` the post-update episodes (sampled with ``θ'_{i,o}``):

    inner step   θ_{k+1}(θ) = θ_k(θ) + inner_lr ∇ J^LR(θ_k),
                 J^LR(θ_k) = mean_t[π_{θ_k}(a_t|s_t) / π_{θ_{k,o}}(a_t|s_t) · A_t]   on D_{i,k},
    objective    loss(θ) = clipped_loss(θ'_i(θ)) + mean_k η_k · mean_i KL(π_{θ_{k,o}} ‖ π_{θ_k(θ)}) on D_{i,k},

with ``clipped_loss`` MAML-PPO's clipped surrogate on ``D'_i`` (:mod:`maml_ppo`, ``clip`` 0.3 as in
the paper), descended by ``epochs`` Adam steps (5, ``lr`` 1e-3), re-adapting ``θ'_i(θ)`` at every
step. After the step each ``η_k`` (``kl_penalties``) moves towards ``kl_target``: halved when the
measured KL is below ``kl_target / 1.5``, doubled when above ``1.5 · kl_target``
(:func:`adapted_kl_penalty`).

Choices, stated:

* At ``θ = θ_o`` the importance-weighted ``J^LR`` and the LVC objective
  ``mean_t[π_θ / ⊥π_θ · A_t]`` (``inner_objective="lvc"``, :mod:`innerloop.rl.adaptation`) have
  the same value, gradient and Hessian — the LVC estimator of the meta-gradient. Once the Adam
  steps move ``θ`` away from ``θ_o`` the paper's ``J^LR`` keeps the importance weights to the
  sampling policy; this file gets exactly ``J^LR``'s gradient and Hessian from the LVC inner step
  by weighting the advantages with the detached ratio ``π_{θ_k} / π_{θ_{k,o}}`` (``∇`` of
  ``π_θ / ⊥π_θ · ⊥w · A`` is ``w ∇log π_θ A``, its Hessian ``w (∇²log π_θ + ∇log π_θ ∇log π_θᵀ) A
  = ∇²π_θ / π_{θ_o} · A``).
* The penalty is averaged over the inner steps (one ``η`` per step), as the authors' code does;
  with one inner step that is the paper's ``η · D̄_KL``. The KL driving ``η`` is the one measured
  at the updated ``θ`` after the epochs.
* Defaults: ``kl_penalty`` (initial ``η``) 5e-4 and ``kl_target`` 0.01 are the authors' settings;
  their released scripts keep ``η`` fixed (``adaptive_kl_penalty=False``), the paper adapts it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from innerloop.functional.params import Params, run
from innerloop.rl.adaptation import TaskRollouts, masked_mean
from innerloop.rl.algorithms.maml_ppo import MAMLPPO, SamplingPolicies

KL_TOLERANCE = 1.5


def adapted_kl_penalty(kl_penalty: float, kl: float, kl_target: float) -> float:
    """``η / 2`` when ``kl < kl_target / 1.5``, ``2 η`` when ``kl > 1.5 kl_target``, else ``η``."""
    if kl < kl_target / KL_TOLERANCE:
        return kl_penalty / 2.0
    if kl > kl_target * KL_TOLERANCE:
        return kl_penalty * 2.0
    return kl_penalty


class ProMP(MAMLPPO):
    """Proximal Meta-Policy Search: LVC inner step, clipped meta-objective, adaptive inner-KL penalty."""

    def __init__(self, policy: nn.Module, lr: float = 1e-3, epochs: int = 5, clip: float = 0.3,
                 grad_clip: float | None = None, kl_penalty: float = 5e-4, kl_target: float = 0.01,
                 adaptive_kl_penalty: bool = True, **inner) -> None:
        objective = inner.pop("inner_objective", "lvc")
        if objective != "lvc":
            raise ValueError(f"ProMP's inner step is the LVC objective (got inner_objective='{objective}'); "
                             "leave inner_objective out, or use MAMLPPO for a vanilla policy-gradient inner step")
        if kl_penalty < 0 or kl_target <= 0:
            raise ValueError(f"ProMP needs kl_penalty >= 0 and kl_target > 0, got {kl_penalty} and {kl_target}")
        super().__init__(policy, lr=lr, epochs=epochs, clip=clip, grad_clip=grad_clip, inner_objective="lvc", **inner)
        self.kl_target = kl_target
        self.adaptive_kl_penalty = adaptive_kl_penalty
        self.kl_penalties = [float(kl_penalty)] * self.inner_steps

    def adapt_for_outer(self, rollouts: TaskRollouts, sampling: SamplingPolicies,
                        create_graph: bool) -> tuple[Params, dict[str, Tensor]]:
        """``θ'_i(θ)`` by importance-weighted LVC steps, and ``KL(π_{θ_{k,o}} ‖ π_{θ_k(θ)})`` of each step."""
        if len(rollouts.train) != len(self.kl_penalties):
            raise ValueError(f"ProMP holds one KL penalty per inner step ({len(self.kl_penalties)}) but the batch has "
                             f"{len(rollouts.train)} pre-update batches; collect with the learner's inner_steps")
        params = self.initial_params()
        kls = []
        for step, (episodes, advantages) in enumerate(zip(rollouts.train, rollouts.train_advantages)):
            distribution = run(self.policy, params, episodes.observations)
            kls.append(masked_mean(kl_divergence(sampling.train_distributions[step], distribution), episodes.mask))
            weights = torch.exp(distribution.log_prob(episodes.actions) - sampling.train_log_probs[step]).detach()
            params = self.inner_update(params, episodes, advantages * weights, create_graph)
        return params, ({"inner_kl": torch.stack(kls)} if kls else {})

    def total_loss(self, parts: dict[str, Tensor]) -> Tensor:
        if "inner_kl" not in parts:
            return parts["clipped_loss"]
        penalties = torch.tensor(self.kl_penalties, dtype=parts["inner_kl"].dtype)
        return parts["clipped_loss"] + (penalties * parts["inner_kl"]).mean()

    def after_outer_step(self, parts: dict[str, Tensor]) -> dict[str, float]:
        stats = super().after_outer_step(parts)
        if "inner_kl" not in parts:
            return stats
        kls = [float(kl) for kl in parts["inner_kl"].detach()]
        if self.adaptive_kl_penalty:
            self.kl_penalties = [adapted_kl_penalty(penalty, kl, self.kl_target)
                                 for penalty, kl in zip(self.kl_penalties, kls)]
        return {**stats, "inner_kl": sum(kls) / len(kls), "kl_penalty": sum(self.kl_penalties) / len(self.kl_penalties)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kl_penalties": list(self.kl_penalties)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "kl_penalties" in state:
            self.kl_penalties = [float(penalty) for penalty in state["kl_penalties"]]
