"""The linear feature baseline and generalized advantage estimates (Duan et al. 2016, "Benchmarking
Deep Reinforcement Learning for Continuous Control"; Schulman et al. 2016, GAE).

MAML-RL fits the baseline per task on the very episodes whose advantages it estimates: a ridge
regression of the returns-to-go ``G_t`` on the features ``[s, s², t/100, (t/100)², (t/100)³, 1]``
(:func:`linear_baseline_values`). The advantages are then
``A_t = sum_k (gamma · gae_lambda)^k δ_{t+k}`` with ``δ_t = r_t + gamma V_{t+1} - V_t``
(``gae_lambda = 1`` gives ``G_t - V_t``), optionally normalised over the batch's steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from innerloop.rl.rollout import Episodes


def baseline_features(episodes: Episodes) -> Tensor:
    """``[T, B, 2·observation_dim + 4]`` features of every step (zero on padded steps)."""
    observations = episodes.observations.reshape(episodes.horizon, episodes.num_episodes, -1).double()
    time = (torch.arange(episodes.horizon, dtype=torch.float64) / 100.0).view(-1, 1, 1)
    time = time.expand(episodes.horizon, episodes.num_episodes, 1)
    features = torch.cat([observations, observations ** 2, time, time ** 2, time ** 3, torch.ones_like(time)], dim=-1)
    return features * episodes.mask.double().unsqueeze(-1)


def linear_baseline_values(episodes: Episodes, gamma: float, regularization: float = 1e-5) -> Tensor:
    """The fitted baseline's values ``V_t`` on the episodes it was fitted to, ``[T, B]``.

    Ridge regression; the regularization is multiplied by 10 until the normal equations solve
    (as the reference implementation does for collinear features, e.g. a constant observation).
    """
    step_features = baseline_features(episodes)
    features = step_features.reshape(-1, step_features.shape[-1])
    targets = episodes.returns_to_go(gamma).double().reshape(-1)
    gram = features.T @ features
    moment = features.T @ targets
    identity = torch.eye(gram.shape[0], dtype=torch.float64)
    for attempt in range(8):
        weights, info = torch.linalg.solve_ex(gram + regularization * (10.0 ** attempt) * identity, moment)
        if int(info) == 0 and torch.isfinite(weights).all():
            break
    else:
        weights = torch.zeros(gram.shape[0], dtype=torch.float64)
    values = (features @ weights).reshape(episodes.horizon, episodes.num_episodes)
    return values.to(episodes.rewards.dtype) * episodes.mask


def generalized_advantages(episodes: Episodes, values: Tensor, gamma: float, gae_lambda: float = 1.0,
                           normalize: bool = True) -> Tensor:
    """GAE over each episode's own steps, ``[T, B]`` (zero on padded steps)."""
    if not 0.0 <= gae_lambda <= 1.0 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {gamma} and {gae_lambda}")
    mask = episodes.mask
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])]) * torch.cat([mask[1:], torch.zeros_like(mask[:1])])
    deltas = (episodes.rewards + gamma * next_values - values) * mask
    advantages = torch.zeros_like(deltas)
    running = torch.zeros(episodes.num_episodes, dtype=deltas.dtype)
    for t in reversed(range(episodes.horizon)):
        running = deltas[t] + gamma * gae_lambda * running * mask[t]
        advantages[t] = running
    if normalize:
        count = mask.sum()
        mean = (advantages * mask).sum() / count
        variance = (((advantages - mean) * mask) ** 2).sum() / count
        advantages = (advantages - mean) / torch.sqrt(variance + 1e-8)
    return advantages * mask


def task_advantages(episodes: Episodes, gamma: float, gae_lambda: float = 1.0, normalize: bool = True) -> Tensor:
    """Advantages of a task's episodes under its own freshly fitted linear baseline."""
    return generalized_advantages(episodes, linear_baseline_values(episodes, gamma), gamma, gae_lambda, normalize)
