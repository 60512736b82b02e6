"""CAVIA for reinforcement learning (Zintgraf et al. 2019, "Fast Context Adaptation via
Meta-Learning", §4.3): the inner loop adapts only a context vector ``φ`` fed to the policy beside
the observation, from ``φ_0 = 0`` for every task,

    φ'_i = φ_0 - inner_lr · ∇_φ L_inner(θ, φ_0; D_i),

while the outer loop learns the network weights ``θ`` by the TRPO step of MAML-RL on the
post-update episodes (differentiating through ``φ'_i(θ)``). The paper's 2-D navigation setting:
a context of 5 entries, inner_lr 10.
"""

from __future__ import annotations

from torch import nn

from innerloop.rl.algorithms.maml_trpo import MAMLTRPO


class CAVIATRPO(MAMLTRPO):
    """CAVIA-RL: context adaptation inside, TRPO outside."""

    def __init__(self, policy: nn.Module, **options) -> None:
        options.pop("adapt", None)
        super().__init__(policy, adapt="context", **options)
