"""RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning"), trained with PPO.

The *fast* learner is a recurrent policy. At step ``t`` of a trial (``episodes_per_trial``
episodes of one task, back to back) the GRU reads

    inputs_t = [observation_t, previous_action, previous_reward, previous_done]

(``previous_action`` one-hot for discrete actions, the executed action for continuous ones;
``previous_done`` is 1 when the previous step ended an episode; all three are zero at a trial's
first step), updates ``hidden_t = GRU(inputs_t, hidden_{t-1})`` and gives ``π(· | hidden_t)``
(categorical or diagonal Gaussian) and the value ``V(hidden_t)``. The hidden state is carried
from one episode of the trial to the next and starts from zeros for each new trial: what the
policy finds out about the task in one episode is there for the next.

The *slow* learner here is PPO (Schulman et al. 2017; the paper used TRPO). Each trial is treated
as one long episode, so advantages bootstrap across episode boundaries and stop at the trial's end:

    deltas_t = rewards_t + gamma · values_{t+1} - values_t          (values past the trial's end: 0)
    advantages_t = sum_k (gamma · gae_lambda)^k · deltas_{t+k}
    returns_t = advantages_t + values_t

and, for ``ppo_epochs`` passes over minibatches of whole trials (the advantages normalised over
the batch's steps),

    ratio_t = exp(log_probs_t - old_log_probs_t)
    policy_loss = -mean_t min(ratio_t · advantages_t, clip(ratio_t, 1 - clip_range, 1 + clip_range) · advantages_t)
    value_loss = mean_t ((values_t - returns_t) / value_scale)²
    loss = policy_loss + value_coef · value_loss - entropy_coef · mean_t entropy_t

is minimised with Adam, the gradient norm clipped to ``max_grad_norm``. The value head predicts
``V / value_scale``, ``value_scale`` a running estimate of the returns' standard deviation, so
that its outputs stay of order one whatever the rewards' scale.

:class:`TrialSampler` runs many trials in lockstep (one environment copy and one row of the
batch per trial, one GRU step for all of them per time step) with its own seeded
``torch.Generator`` and environment seeds: the same seed gives the same trials, and the global
torch and NumPy RNGs are left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from innerloop.rl.advantages import generalized_advantages
from innerloop.rl.envs.base import MetaEnv, Task
from innerloop.rl.rollout import EnvironmentPool, Episodes, sample_actions


class RecurrentPolicy(nn.Module):
    """A GRU over ``[observation, previous action, previous reward, previous done]`` with a policy and a value head."""

    def __init__(self, observation_dim: int, action_dim: int, discrete: bool, hidden_size: int = 256,
                 init_std: float = 1.0, min_std: float = 1e-6) -> None:
        super().__init__()
        if observation_dim < 1 or action_dim < 1 or hidden_size < 1:
            raise ValueError("RecurrentPolicy: observation_dim, action_dim and hidden_size must be positive, got "
                             f"{observation_dim}, {action_dim}, {hidden_size}")
        if discrete and action_dim < 2:
            raise ValueError(f"a categorical policy needs at least 2 actions, got {action_dim}")
        if init_std <= 0 or min_std <= 0:
            raise ValueError(f"init_std and min_std must be positive, got {init_std} and {min_std}")
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.discrete = discrete
        self.hidden_size = hidden_size
        self.input_dim = observation_dim + action_dim + 2
        self.gru = nn.GRU(self.input_dim, hidden_size)
        self.action_head = nn.Linear(hidden_size, action_dim)
        self.value_head = nn.Linear(hidden_size, 1)
        # A near-uniform (or near-zero-mean) first policy, as is usual for PPO.
        nn.init.orthogonal_(self.action_head.weight, gain=0.01)
        nn.init.zeros_(self.action_head.bias)
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)
        nn.init.zeros_(self.value_head.bias)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
            self.min_log_std = math.log(min_std)
        self.register_buffer("value_scale", torch.ones(()))

    def initial_state(self, batch_size: int) -> Tensor:
        """The hidden state a trial starts from: zeros, ``[1, batch_size, hidden_size]``."""
        return torch.zeros(1, batch_size, self.hidden_size)

    def forward(self, inputs: Tensor, hidden: Tensor | None = None) -> tuple[Distribution, Tensor, Tensor]:
        """``inputs [T, B, input_dim]`` → (action distribution over ``[T, B]``, values ``[T, B]``, last hidden state)."""
        if inputs.shape[-1] != self.input_dim:
            raise ValueError(f"the recurrent policy takes inputs of size {self.input_dim} "
                             f"(observation + action + reward + done), got shape {tuple(inputs.shape)}")
        if hidden is None:
            hidden = self.initial_state(inputs.shape[1])
        features, hidden = self.gru(inputs, hidden)
        values = self.value_head(features).squeeze(-1) * self.value_scale
        head = self.action_head(features)
        if self.discrete:
            return Categorical(logits=head), values, hidden
        std = torch.exp(torch.clamp(self.log_std, min=self.min_log_std))
        return Independent(Normal(head, std.expand_as(head)), 1), values, hidden


def recurrent_policy_for(env: MetaEnv, hidden_size: int = 256, init_std: float = 1.0) -> RecurrentPolicy:
    """The recurrent policy that fits ``env``'s spaces (categorical for Discrete, Gaussian for Box)."""
    observation_dim = int(math.prod(env.observation_space.shape))
    if isinstance(env.action_space, spaces.Discrete):
        return RecurrentPolicy(observation_dim, int(env.action_space.n), True, hidden_size)
    if isinstance(env.action_space, spaces.Box):
        return RecurrentPolicy(observation_dim, int(math.prod(env.action_space.shape)), False, hidden_size, init_std)
    raise ValueError(f"no recurrent policy for the action space {env.action_space}; Box and Discrete are supported")


@dataclass
class Trials:
    """A batch of trials, time-major and padded with ``mask`` (one column per trial)."""

    inputs: Tensor  # [T, B, input_dim]: what the GRU read at each step
    actions: Tensor  # [T, B] (discrete) or [T, B, action_dim], as sampled (before clipping)
    rewards: Tensor  # [T, B]
    mask: Tensor  # [T, B]: 1 where the step happened
    episode_index: Tensor  # [T, B] int64: which episode of its trial the step belongs to
    log_probs: Tensor  # [T, B] under the policy that sampled the trials
    values: Tensor  # [T, B] of that policy
    episodes_per_trial: int
    tasks: list[Task]

    @property
    def num_trials(self) -> int:
        return self.rewards.shape[1]

    def trial_returns(self) -> Tensor:
        """Undiscounted total reward of each trial, ``[B]``."""
        return (self.rewards * self.mask).sum(0)

    def episode_returns(self) -> Tensor:
        """Undiscounted return of episode ``k`` of each trial, ``[episodes_per_trial, B]``."""
        returns = torch.zeros(self.episodes_per_trial, self.num_trials, dtype=self.rewards.dtype)
        return returns.scatter_add_(0, self.episode_index, self.rewards * self.mask)


class TrialSampler(EnvironmentPool):
    """Samples trials of several tasks at once from a pool of environment copies."""

    @torch.no_grad()
    def sample(self, policy: RecurrentPolicy, tasks: Sequence[Task], episodes_per_trial: int, seed: int,
               deterministic: bool = False) -> Trials:
        """One trial of ``episodes_per_trial`` episodes (each at most ``horizon`` steps) per task.

        ``deterministic`` acts with the distribution's mode (argmax / mean) instead of a draw.
        """
        if episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be at least 1, got {episodes_per_trial}")
        if not tasks:
            raise ValueError("sample needs at least one task")
        if policy.input_dim != self.observation_dim + self.action_dim + 2:
            raise ValueError(f"the policy reads inputs of size {policy.input_dim}, but this environment gives "
                             f"{self.observation_dim + self.action_dim + 2}; build it with recurrent_policy_for(env)")
        num_trials = len(tasks)
        envs = self._pool(num_trials)
        env_seeds = np.random.SeedSequence(seed).generate_state(num_trials + 1)
        generator = torch.Generator().manual_seed(int(env_seeds[-1]))
        observations = np.zeros((num_trials, self.observation_dim), dtype=np.float32)
        for index, env in enumerate(envs):
            env.set_task(tasks[index])
            observation, _ = env.reset(seed=int(env_seeds[index]))
            observations[index] = np.asarray(observation, dtype=np.float32).reshape(-1)
        max_length = episodes_per_trial * self.horizon
        inputs = torch.zeros(max_length, num_trials, policy.input_dim)
        rewards = np.zeros((max_length, num_trials), dtype=np.float32)
        mask = np.zeros((max_length, num_trials), dtype=np.float32)
        episode_index = np.zeros((max_length, num_trials), dtype=np.int64)
        log_probs = torch.zeros(max_length, num_trials)
        values = torch.zeros(max_length, num_trials)
        actions: Tensor | None = None
        previous_actions = np.zeros((num_trials, self.action_dim), dtype=np.float32)
        previous_rewards = np.zeros((num_trials, 1), dtype=np.float32)
        previous_done = np.zeros((num_trials, 1), dtype=np.float32)
        episode = np.zeros(num_trials, dtype=np.int64)
        step_in_episode = np.zeros(num_trials, dtype=np.int64)
        alive = np.ones(num_trials, dtype=bool)
        hidden = policy.initial_state(num_trials)
        length = max_length
        for t in range(max_length):
            if not alive.any():
                length = t
                break
            step_inputs = torch.from_numpy(np.concatenate([observations, previous_actions, previous_rewards,
                                                           previous_done], axis=1))
            distribution, step_values, hidden = policy(step_inputs.unsqueeze(0), hidden)
            step_actions = _mode(distribution) if deterministic else sample_actions(distribution, generator)
            if actions is None:
                actions = torch.zeros((max_length, *step_actions.shape[1:]), dtype=step_actions.dtype)
            inputs[t] = step_inputs
            actions[t] = step_actions[0]
            log_probs[t] = distribution.log_prob(step_actions)[0]
            values[t] = step_values[0]
            mask[t] = alive
            episode_index[t] = np.minimum(episode, episodes_per_trial - 1)
            sent = step_actions[0].numpy()
            for index in np.flatnonzero(alive):
                if self.discrete:
                    action = int(sent[index])
                    previous_actions[index] = 0.0
                    previous_actions[index, action] = 1.0
                else:
                    action = np.clip(sent[index], self.action_low, self.action_high)
                    previous_actions[index] = action
                observation, reward, terminated, truncated, _ = envs[index].step(action)
                rewards[t, index] = reward
                previous_rewards[index, 0] = reward
                step_in_episode[index] += 1
                ended = bool(terminated or truncated) or step_in_episode[index] >= self.horizon
                previous_done[index, 0] = float(ended)
                if ended:
                    episode[index] += 1
                    step_in_episode[index] = 0
                    if episode[index] >= episodes_per_trial:
                        alive[index] = False
                        continue
                    observation, _ = envs[index].reset()
                observations[index] = np.asarray(observation, dtype=np.float32).reshape(-1)
        assert actions is not None
        return Trials(inputs[:length], actions[:length], torch.from_numpy(rewards[:length]),
                      torch.from_numpy(mask[:length]), torch.from_numpy(episode_index[:length]), log_probs[:length],
                      values[:length] * torch.from_numpy(mask[:length]), episodes_per_trial,
                      [dict(task) for task in tasks])


def _mode(distribution: Distribution) -> Tensor:
    if isinstance(distribution, Categorical):
        return distribution.probs.argmax(-1)
    if isinstance(distribution, Independent) and isinstance(distribution.base_dist, Normal):
        return distribution.base_dist.loc.clone()
    raise TypeError(f"no mode for {type(distribution).__name__}")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def clipped_surrogate_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor,
                           clip_range: float) -> Tensor:
    """PPO's ``-mean_t min(ratio_t · A_t, clip(ratio_t, 1 - clip_range, 1 + clip_range) · A_t)`` over ``mask``."""
    ratio = torch.exp(log_probs - old_log_probs)
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return -masked_mean(torch.minimum(ratio * advantages, clipped * advantages), mask)


def trial_advantages(trials: Trials, gamma: float, gae_lambda: float) -> tuple[Tensor, Tensor]:
    """GAE over each whole trial as one episode: ``(advantages, returns)``, both ``[T, B]``, unnormalised."""
    as_episodes = Episodes(trials.inputs, trials.actions, trials.rewards, trials.mask, {})
    advantages = generalized_advantages(as_episodes, trials.values, gamma, gae_lambda, normalize=False)
    return advantages, (advantages + trials.values) * trials.mask


class RL2:
    """RL² with a PPO outer loop over trials of ``episodes_per_trial`` episodes of one task."""

    def __init__(self, make_env: Callable[[], MetaEnv], episodes_per_trial: int = 2, hidden_size: int = 256,
                 policy: RecurrentPolicy | None = None, lr: float = 3e-4, clip_range: float = 0.2,
                 ppo_epochs: int = 4, num_minibatches: int = 4, gamma: float = 0.99, gae_lambda: float = 0.95,
                 value_coef: float = 0.5, entropy_coef: float = 0.01, max_grad_norm: float = 0.5,
                 init_std: float = 1.0, value_scale_momentum: float = 0.9) -> None:
        if episodes_per_trial < 1 or ppo_epochs < 1 or num_minibatches < 1:
            raise ValueError("RL2: episodes_per_trial, ppo_epochs and num_minibatches must be at least 1, got "
                             f"{episodes_per_trial}, {ppo_epochs}, {num_minibatches}")
        if lr <= 0 or clip_range <= 0 or max_grad_norm <= 0 or value_coef < 0 or entropy_coef < 0:
            raise ValueError("RL2: lr, clip_range and max_grad_norm must be positive and value_coef, entropy_coef "
                             f"non-negative; got {lr}, {clip_range}, {max_grad_norm}, {value_coef}, {entropy_coef}")
        if not 0.0 <= gamma <= 1.0 or not 0.0 <= gae_lambda <= 1.0 or not 0.0 <= value_scale_momentum < 1.0:
            raise ValueError(f"RL2: gamma and gae_lambda must lie in [0, 1] and value_scale_momentum in [0, 1); "
                             f"got {gamma}, {gae_lambda}, {value_scale_momentum}")
        self.sampler = TrialSampler(make_env)
        self.policy = policy if policy is not None else recurrent_policy_for(self.sampler.envs[0], hidden_size, init_std)
        self.episodes_per_trial = episodes_per_trial
        self.clip_range = clip_range
        self.ppo_epochs = ppo_epochs
        self.num_minibatches = num_minibatches
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm
        self.value_scale_momentum = value_scale_momentum
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.updates = 0

    def train_step(self, tasks: Sequence[Task], seed: int) -> dict[str, float]:
        """Sample one trial per task with the current policy (seeded), then take the PPO update on them."""
        trials = self.sampler.sample(self.policy, tasks, self.episodes_per_trial, seed)
        return {"trial_return": float(trials.trial_returns().mean()), **self.update(trials, seed)}

    def _update_value_scale(self, returns: Tensor, mask: Tensor) -> None:
        mean = masked_mean(returns, mask)
        std = float(torch.sqrt(masked_mean((returns - mean) ** 2, mask)).clamp_min(1e-3))
        scale = self.policy.value_scale
        if self.updates == 0:
            scale.fill_(std)
        else:
            scale.mul_(self.value_scale_momentum).add_((1.0 - self.value_scale_momentum) * std)

    def update(self, trials: Trials, seed: int) -> dict[str, float]:
        """``ppo_epochs`` passes of Adam steps on minibatches of whole trials (shuffled with ``seed``)."""
        advantages, returns = trial_advantages(trials, self.gamma, self.gae_lambda)
        mask = trials.mask
        mean = masked_mean(advantages, mask)
        std = torch.sqrt(masked_mean((advantages - mean) ** 2, mask))
        advantages = (advantages - mean) / (std + 1e-8) * mask
        self._update_value_scale(returns, mask)
        generator = torch.Generator().manual_seed(seed * 7919 + 17)
        num_minibatches = min(self.num_minibatches, trials.num_trials)
        totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
        count = 0
        for _ in range(self.ppo_epochs):
            order = torch.randperm(trials.num_trials, generator=generator)
            for rows in order.chunk(num_minibatches):
                batch_mask = mask[:, rows]
                distribution, values, _ = self.policy(trials.inputs[:, rows])
                log_probs = distribution.log_prob(trials.actions[:, rows])
                old_log_probs = trials.log_probs[:, rows]
                policy_loss = clipped_surrogate_loss(log_probs, old_log_probs, advantages[:, rows], batch_mask,
                                                     self.clip_range)
                scale = self.policy.value_scale
                value_loss = masked_mean(((values - returns[:, rows]) / scale) ** 2, batch_mask)
                entropy = masked_mean(distribution.entropy(), batch_mask)
                loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    log_ratio = log_probs - old_log_probs
                    totals["policy_loss"] += float(policy_loss)
                    totals["value_loss"] += float(value_loss)
                    totals["entropy"] += float(entropy)
                    totals["approx_kl"] += float(masked_mean(-log_ratio, batch_mask))
                    totals["clip_fraction"] += float(masked_mean(((log_ratio.exp() - 1).abs() > self.clip_range).float(),
                                                                 batch_mask))
                count += 1
        self.updates += 1
        return {name: value / count for name, value in totals.items()} | {"value_scale": float(self.policy.value_scale)}

    @torch.no_grad()
    def evaluate_tasks(self, tasks: Sequence[Task], episodes_per_trial: int | None = None, seed: int = 0,
                       deterministic: bool = False) -> Tensor:
        """Return of episode ``k`` of one trial per task, ``[episodes_per_trial, num_tasks]``; ``.sum(0)`` is the
        trial's total. No parameter changes: adaptation is the hidden state alone."""
        episodes = self.episodes_per_trial if episodes_per_trial is None else episodes_per_trial
        return self.sampler.sample(self.policy, tasks, episodes, seed, deterministic).episode_returns()

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
