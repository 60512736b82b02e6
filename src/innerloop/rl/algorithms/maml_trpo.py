"""MAML-RL with a TRPO outer loop (Finn et al. 2017, "Model-Agnostic Meta-Learning", §3.2 and §5.3).

For each task ``T_i`` of a meta-batch: pre-update episodes ``D_i`` with ``θ``, the inner
policy-gradient step ``θ'_i = θ - inner_lr ∇ L_inner(θ; D_i)``, post-update episodes ``D'_i``
with ``θ'_i``. The outer loop maximises the importance-weighted surrogate of the post-update
returns,

    L(θ) = -mean_i mean_t[ π_{θ'_i(θ)}(a_t|s_t) / π_{θ'_i,old}(a_t|s_t) · A'_t ]   on D'_i,

by a TRPO step: the gradient differentiates through ``θ'_i(θ)`` (second order unless
``first_order``), the trust region is ``mean_i KL(π_{θ'_i,old} ‖ π_{θ'_i(θ)}) <= max_kl``, whose
Hessian at ``θ_old`` gives the Fisher-vector products (:mod:`innerloop.rl.trust_region`).
``fisher="exact"`` differentiates that KL through the adaptation (third-order terms, as in the
reference implementations); ``fisher="first-order"`` uses the Fisher of the adapted policies
with ``θ'_i - θ`` held fixed — about four times cheaper per outer step on HalfCheetah. Either way
the line search checks the exact KL of the adapted policies, so the constraint holds.

With ``inner_steps=0`` at training this is plain TRPO on the mixture of tasks: the "pretrained"
baseline of the paper, fine-tuned at test time by the same inner step.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from innerloop.functional.params import run
from innerloop.rl.adaptation import PolicyGradientMetaLearner, TaskRollouts, log_probabilities, masked_mean
from innerloop.rl.trust_region import fisher_vector_product, trust_region_step


FISHER_MODES = ("exact", "first-order")


class MAMLTRPO(PolicyGradientMetaLearner):
    """MAML-RL, outer loop TRPO."""

    def __init__(self, policy, max_kl: float = 0.01, cg_iterations: int = 10, cg_damping: float = 1e-5,
                 line_search_steps: int = 15, line_search_ratio: float = 0.8, fisher: str = "exact", **inner) -> None:
        super().__init__(policy, **inner)
        if fisher not in FISHER_MODES:
            raise ValueError(f"fisher must be one of {', '.join(FISHER_MODES)}, got '{fisher}'")
        self.fisher = fisher
        if max_kl <= 0 or cg_iterations < 1 or cg_damping < 0 or line_search_steps < 1 or not 0 < line_search_ratio < 1:
            raise ValueError("TRPO needs max_kl > 0, cg_iterations >= 1, cg_damping >= 0, line_search_steps >= 1 and "
                             f"line_search_ratio in (0, 1); got {max_kl}, {cg_iterations}, {cg_damping}, "
                             f"{line_search_steps}, {line_search_ratio}")
        self.max_kl = max_kl
        self.cg_iterations = cg_iterations
        self.cg_damping = cg_damping
        self.line_search_steps = line_search_steps
        self.line_search_ratio = line_search_ratio

    def _surrogate_and_kl(self, batch: list[TaskRollouts], old_log_probs: list[Tensor], old_distributions: list,
                          create_graph: bool) -> tuple[Tensor, Tensor]:
        losses, kls = [], []
        for rollouts, old_log_prob, old_distribution in zip(batch, old_log_probs, old_distributions):
            adapted = self.adapt(self.initial_params(), rollouts, create_graph=create_graph)
            valid = rollouts.valid
            distribution = run(self.policy, adapted, valid.observations)
            ratio = torch.exp(distribution.log_prob(valid.actions) - old_log_prob)
            losses.append(-masked_mean(ratio * rollouts.valid_advantages, valid.mask))
            kls.append(masked_mean(kl_divergence(old_distribution, distribution), valid.mask))
        return torch.stack(losses).mean(), torch.stack(kls).mean()

    def _old_policies(self, batch: list[TaskRollouts]) -> tuple[list[Tensor], list, list]:
        log_probs, distributions, shifts = [], [], []
        start = self.initial_params(detach=True)
        for rollouts in batch:
            adapted = {k: v.detach() for k, v in self.adapt(dict(start), rollouts, create_graph=False).items()}
            shifts.append({name: adapted[name] - start[name] for name in adapted})
            with torch.no_grad():
                distributions.append(run(self.policy, adapted, rollouts.valid.observations))
                log_probs.append(log_probabilities(self.policy, adapted, rollouts.valid))
        return log_probs, distributions, shifts

    def _first_order_kl(self, batch: list[TaskRollouts], old_distributions: list, shifts: list) -> Tensor:
        """mean_i KL(π_{θ'_i,old} ‖ π_{θ + (θ'_i,old - θ_old)}): the adapted policies' Fisher without the
        adaptation's own derivatives."""
        kls = []
        for rollouts, old_distribution, shift in zip(batch, old_distributions, shifts):
            start = self.initial_params()
            shifted = {name: start[name] + shift[name] for name in start}
            distribution = run(self.policy, shifted, rollouts.valid.observations)
            kls.append(masked_mean(kl_divergence(old_distribution, distribution), rollouts.valid.mask))
        return torch.stack(kls).mean()

    def outer_step(self, batch: list[TaskRollouts]) -> dict[str, float]:
        parameters = self.meta_parameters()
        old_log_probs, old_distributions, shifts = self._old_policies(batch)
        loss, kl = self._surrogate_and_kl(batch, old_log_probs, old_distributions, create_graph=True)
        if self.fisher == "first-order":
            kl = self._first_order_kl(batch, old_distributions, shifts)
        gradient = dict(zip(parameters, torch.autograd.grad(loss, list(parameters.values()), retain_graph=True)))
        fisher_product = fisher_vector_product(kl, parameters, self.cg_damping)

        def evaluate() -> tuple[float, float]:
            new_loss, new_kl = self._surrogate_and_kl(batch, old_log_probs, old_distributions, create_graph=False)
            return float(new_loss), float(new_kl)

        gradient = {name: value.detach() for name, value in gradient.items()}
        stats = trust_region_step(parameters, gradient, fisher_product, evaluate, float(loss.detach()), self.max_kl,
                                  self.cg_iterations, self.line_search_steps, self.line_search_ratio)
        return {"surrogate_loss": float(loss.detach()), **stats}
