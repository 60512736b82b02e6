"""Stochastic policies for meta-RL, written for the functional core.

A policy is an ``nn.Module`` whose ``forward(observations)`` returns a
``torch.distributions.Distribution`` over actions; the meta-learners call it as
``innerloop.functional.run(policy, params, observations)`` with explicit (possibly adapted)
parameter dicts, so inner-loop updates are differentiable like every other inner loop here.

* :class:`GaussianMLPPolicy` — continuous actions: an MLP gives the mean of a Gaussian with a
  diagonal covariance whose log standard deviations are learned, state-independent parameters
  (``log_std``), as in Finn et al. 2017 and Rothfuss et al. 2019.
* :class:`CategoricalMLPPolicy` — discrete actions: an MLP gives the logits.

Both take ``context_dim``: with it the observation is concatenated with a context vector held
in the buffer ``context`` (zeros) — the per-task parameters that CAVIA (Zintgraf et al. 2019)
adapts in place of the network's weights; a meta-learner passes the adapted context in the
parameter dict under the name ``"context"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

NONLINEARITIES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}
CONTEXT = "context"


def _mlp(input_dim: int, hidden_sizes: Sequence[int], output_dim: int, nonlinearity: str) -> tuple[nn.Sequential, nn.Linear]:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity '{nonlinearity}'; choose one of {', '.join(NONLINEARITIES)}")
    layers: list[nn.Module] = []
    width = input_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), NONLINEARITIES[nonlinearity]()]
        width = size
    body = nn.Sequential(*layers)
    head = nn.Linear(width, output_dim)
    for module in list(body) + [head]:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return body, head


class _MLPPolicy(nn.Module):
    def __init__(self, observation_dim: int, output_dim: int, hidden_sizes: Sequence[int], nonlinearity: str,
                 context_dim: int) -> None:
        super().__init__()
        if observation_dim < 1 or output_dim < 1 or context_dim < 0 or any(size < 1 for size in hidden_sizes):
            raise ValueError("policy sizes must be positive (context_dim may be 0): got observation_dim="
                             f"{observation_dim}, output_dim={output_dim}, hidden_sizes={list(hidden_sizes)}, "
                             f"context_dim={context_dim}")
        self.observation_dim = observation_dim
        self.context_dim = context_dim
        self.body, self.head = _mlp(observation_dim + context_dim, hidden_sizes, output_dim, nonlinearity)
        if context_dim:
            self.register_buffer(CONTEXT, torch.zeros(context_dim))

    def _features(self, observations: Tensor) -> Tensor:
        if observations.shape[-1] != self.observation_dim:
            raise ValueError(f"the policy takes observations of size {self.observation_dim}, "
                             f"got shape {tuple(observations.shape)}")
        if self.context_dim:
            context = getattr(self, CONTEXT).expand(*observations.shape[:-1], self.context_dim)
            observations = torch.cat([observations, context], dim=-1)
        return self.body(observations)


class GaussianMLPPolicy(_MLPPolicy):
    """``a ~ N(head(body(s)), diag(exp(log_std))²)``."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_sizes: Sequence[int] = (100, 100),
                 nonlinearity: str = "relu", init_std: float = 1.0, min_std: float = 1e-6,
                 context_dim: int = 0) -> None:
        super().__init__(observation_dim, action_dim, hidden_sizes, nonlinearity, context_dim)
        if init_std <= 0 or min_std <= 0:
            raise ValueError(f"init_std and min_std must be positive, got {init_std} and {min_std}")
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
        self.min_log_std = math.log(min_std)

    def forward(self, observations: Tensor) -> Distribution:
        mean = self.head(self._features(observations))
        std = torch.exp(torch.clamp(self.log_std, min=self.min_log_std))
        return Independent(Normal(mean, std.expand_as(mean)), 1)


class CategoricalMLPPolicy(_MLPPolicy):
    """``a ~ Categorical(softmax(head(body(s))))``."""

    def __init__(self, observation_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (100, 100),
                 nonlinearity: str = "relu", context_dim: int = 0) -> None:
        if num_actions < 2:
            raise ValueError(f"a categorical policy needs at least 2 actions, got {num_actions}")
        super().__init__(observation_dim, num_actions, hidden_sizes, nonlinearity, context_dim)

    def forward(self, observations: Tensor) -> Distribution:
        return Categorical(logits=self.head(self._features(observations)))


def policy_for(env, hidden_sizes: Sequence[int] = (100, 100), nonlinearity: str = "relu", init_std: float = 1.0,
               context_dim: int = 0) -> nn.Module:
    """The policy that fits ``env``'s spaces: Gaussian for a Box action space, categorical for Discrete."""
    from gymnasium import spaces

    observation_dim = int(math.prod(env.observation_space.shape))
    if isinstance(env.action_space, spaces.Discrete):
        return CategoricalMLPPolicy(observation_dim, int(env.action_space.n), hidden_sizes, nonlinearity, context_dim)
    if isinstance(env.action_space, spaces.Box):
        return GaussianMLPPolicy(observation_dim, int(math.prod(env.action_space.shape)), hidden_sizes, nonlinearity,
                                 init_std, context_dim=context_dim)
    raise ValueError(f"no policy for the action space {env.action_space}; Box and Discrete are supported")
