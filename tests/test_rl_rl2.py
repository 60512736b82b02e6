"""RL²: the recurrent policy's memory over a trial, the seeded trial sampler, and PPO's pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from innerloop.rl.algorithms.rl2 import (RL2, RecurrentPolicy, TrialSampler, Trials, clipped_surrogate_loss,
                                         recurrent_policy_for, trial_advantages)
from innerloop.rl.envs import make_env


def _bandit(num_arms: int = 2):
    return lambda: make_env("bandit", num_arms=num_arms)


def _policy(env, hidden_size: int = 16, seed: int = 0) -> RecurrentPolicy:
    torch.manual_seed(seed)
    policy = recurrent_policy_for(env, hidden_size=hidden_size)
    with torch.no_grad():  # a visibly non-uniform policy, so that memory shows in its outputs
        policy.action_head.weight.normal_(0.0, 1.0)
    return policy


# --- the recurrent policy's inputs and memory ------------------------------------------------------
def test_bandit_inputs_are_observation_previous_action_one_hot_reward_and_done_flag():
    sampler = TrialSampler(_bandit(3))
    policy = _policy(sampler.envs[0])
    tasks = [{"probabilities": [1.0, 1.0, 1.0]}, {"probabilities": [0.0, 0.0, 0.0]}]
    trials = sampler.sample(policy, tasks, episodes_per_trial=4, seed=0)
    assert trials.inputs.shape == (4, 2, 1 + 3 + 2)
    assert torch.equal(trials.inputs[0], torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 2))  # a trial starts from zeros
    for t in range(1, 4):
        for trial in range(2):
            one_hot = torch.zeros(3)
            one_hot[trials.actions[t - 1, trial]] = 1.0
            expected = torch.cat([torch.ones(1), one_hot, trials.rewards[t - 1, trial].view(1), torch.ones(1)])
            assert torch.equal(trials.inputs[t, trial], expected)
    assert torch.equal(trials.rewards, torch.tensor([[1.0, 0.0]] * 4))
    assert torch.equal(trials.episode_index, torch.arange(4).view(4, 1).expand(4, 2))


def test_action_distribution_in_episode_two_depends_on_episode_one_reward():
    sampler = TrialSampler(_bandit(2))
    policy = _policy(sampler.envs[0])
    paying, failing = {"probabilities": [1.0, 1.0]}, {"probabilities": [0.0, 0.0]}
    trials = sampler.sample(policy, [paying, failing], episodes_per_trial=2, seed=0, deterministic=True)
    assert trials.rewards[0].tolist() == [1.0, 0.0] and trials.actions[0, 0] == trials.actions[0, 1]
    with torch.no_grad():
        distribution, _, _ = policy(trials.inputs)
    probabilities = distribution.probs
    assert torch.equal(probabilities[0, 0], probabilities[0, 1])  # same first pull, same state
    assert (probabilities[1, 0] - probabilities[1, 1]).abs().max() > 1e-3  # only episode 1's reward differs


def test_hidden_state_is_carried_across_episodes_and_reset_between_trials():
    sampler = TrialSampler(lambda: make_env("navigation-2d", horizon=4))
    policy = _policy(sampler.envs[0])
    tasks = make_env("navigation-2d").sample_tasks(3, seed=1)
    trials = sampler.sample(policy, tasks, episodes_per_trial=3, seed=5)
    assert trials.inputs.shape[0] == 12
    # the sampler's log-probabilities are those of one GRU pass over the whole trial from zeros ...
    with torch.no_grad():
        whole, _, _ = policy(trials.inputs)
        torch.testing.assert_close(whole.log_prob(trials.actions), trials.log_probs, rtol=1e-5, atol=1e-5)
        # ... and not those of a GRU restarted at each episode (which would forget the task)
        restarted = torch.cat([policy(trials.inputs[k * 4:(k + 1) * 4])[0].log_prob(trials.actions[k * 4:(k + 1) * 4])
                               for k in range(3)])
    assert (restarted[4:] - trials.log_probs[4:]).abs().max() > 1e-3
    torch.testing.assert_close(restarted[:4], trials.log_probs[:4], rtol=1e-5, atol=1e-5)
    # the done flag is 1 exactly after each episode's last step; a second trial starts from zeros again
    assert trials.inputs[:, 0, -1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    again = sampler.sample(policy, tasks, episodes_per_trial=3, seed=5)
    assert torch.equal(again.log_probs, trials.log_probs)


def test_tabular_mdp_trials_are_consecutive_fixed_length_episodes():
    sampler = TrialSampler(lambda: make_env("tabular-mdp", num_states=4, num_actions=3, horizon=5))
    policy = _policy(sampler.envs[0])
    assert policy.input_dim == 4 + 3 + 2
    tasks = make_env("tabular-mdp", num_states=4, num_actions=3, horizon=5).sample_tasks(2, seed=0)
    trials = sampler.sample(policy, tasks, episodes_per_trial=3, seed=1)
    assert trials.inputs.shape[:2] == (15, 2) and bool(trials.mask.all())
    assert trials.episode_index[:, 0].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    starts = trials.inputs[[0, 5, 10], :, :4]  # every episode starts in state 0
    assert bool((starts[..., 0] == 1).all()) and float(starts[..., 1:].abs().sum()) == 0.0


def test_episodes_that_end_early_start_the_next_episode_at_once():
    sampler = TrialSampler(lambda: make_env("navigation-2d", horizon=50, goal_tolerance=0.2))
    policy = _policy(sampler.envs[0])
    near, far = {"goal": [0.0, 0.05]}, {"goal": [0.5, 0.5]}
    trials = sampler.sample(policy, [near, far], episodes_per_trial=2, seed=0)
    near_steps = int(trials.mask[:, 0].sum())
    assert near_steps == 2  # the start is within tolerance: each episode ends after its first step
    assert int(trials.mask[:, 1].sum()) == 100
    assert trials.episode_index[:2, 0].tolist() == [0, 1]
    returns = trials.episode_returns()
    assert returns.shape == (2, 2)
    torch.testing.assert_close(returns.sum(0), trials.trial_returns())
    torch.testing.assert_close(returns[1, 1], trials.rewards[50:, 1].sum())


# --- seeding -------------------------------------------------------------------------------------
def test_trial_sampler_is_seeded_and_leaves_global_rngs_alone():
    sampler = TrialSampler(_bandit(5))
    policy = _policy(sampler.envs[0])
    tasks = make_env("bandit", num_arms=5).sample_tasks(8, seed=3)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = sampler.sample(policy, tasks, episodes_per_trial=20, seed=11)
    second = sampler.sample(policy, tasks, episodes_per_trial=20, seed=11)
    other = sampler.sample(policy, tasks, episodes_per_trial=20, seed=12)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert torch.equal(first.actions, second.actions) and torch.equal(first.rewards, second.rewards)
    assert not torch.equal(first.actions, other.actions)


# --- PPO -----------------------------------------------------------------------------------------
def test_clipped_surrogate_loss_equals_hand_computed_value():
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.5, 3.0])
    advantages = torch.tensor([1.0, 1.0, -2.0, -1.0, 5.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    old_log_probs = torch.tensor([-0.3, -1.2, -0.7, -2.0, -0.1])
    loss = clipped_surrogate_loss(old_log_probs + ratios.log(), old_log_probs, advantages, mask, clip_range=0.2)
    # min(r·A, clip(r, 0.8, 1.2)·A): 1.2 (clipped), 0.5, -2.2, -0.8 (clipped); the fifth step is padding
    assert math.isclose(float(loss), -(1.2 + 0.5 - 2.2 - 0.8) / 4, rel_tol=1e-6)


def test_gae_runs_over_the_whole_trial_across_episode_boundaries():
    rewards = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    values = torch.tensor([[0.5], [0.5], [0.5], [0.0]])
    mask = torch.tensor([[1.0], [1.0], [1.0], [0.0]])
    trials = Trials(torch.zeros(4, 1, 5), torch.zeros(4, 1, dtype=torch.long), rewards, mask,
                    torch.tensor([[0], [1], [2], [0]]), torch.zeros(4, 1), values, 3, [{}])
    advantages, returns = trial_advantages(trials, gamma=0.9, gae_lambda=0.5)
    # deltas 1 + 0.45 - 0.5 = 0.95, 0 + 0.45 - 0.5 = -0.05, 1 - 0.5 = 0.5 (nothing after the trial's end)
    expected = torch.tensor([[0.95 + 0.45 * (-0.05 + 0.45 * 0.5)], [-0.05 + 0.45 * 0.5], [0.5], [0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_update_is_deterministic_given_seed_and_changes_the_policy():
    env_factory = _bandit(2)
    tasks = make_env("bandit", num_arms=2).sample_tasks(8, seed=0)
    learners = []
    for _ in range(2):
        torch.manual_seed(0)
        learner = RL2(env_factory, episodes_per_trial=5, hidden_size=8, num_minibatches=2, ppo_epochs=2)
        stats = learner.train_step(tasks, seed=3)
        learners.append(learner)
    assert set(stats) >= {"trial_return", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
    for (name, left), right in zip(learners[0].policy.state_dict().items(), learners[1].policy.state_dict().values()):
        assert torch.equal(left, right), name
    torch.manual_seed(0)
    fresh = RL2(env_factory, episodes_per_trial=5, hidden_size=8)
    assert not torch.equal(fresh.policy.gru.weight_hh_l0, learners[0].policy.gru.weight_hh_l0)


def test_state_dict_round_trip_gives_the_same_evaluation():
    tasks = make_env("bandit", num_arms=3).sample_tasks(6, seed=2)
    torch.manual_seed(0)
    learner = RL2(_bandit(3), episodes_per_trial=6, hidden_size=8)
    learner.train_step(tasks, seed=0)
    torch.manual_seed(1)
    copy = RL2(_bandit(3), episodes_per_trial=6, hidden_size=8)
    copy.load_state_dict(learner.state_dict())
    returns = learner.evaluate_tasks(tasks, seed=4)
    assert returns.shape == (6, 6)
    assert torch.equal(returns, copy.evaluate_tasks(tasks, seed=4))
    assert copy.updates == 1 and float(copy.policy.value_scale) == float(learner.policy.value_scale) != 1.0


def test_refuses_a_policy_built_for_another_environment():
    policy = recurrent_policy_for(make_env("bandit", num_arms=5), hidden_size=4)
    with pytest.raises(ValueError, match="recurrent_policy_for"):
        TrialSampler(_bandit(2)).sample(policy, [{"probabilities": [0.5, 0.5]}], 2, seed=0)


# --- it learns to use its memory ------------------------------------------------------------------
def test_rl2_learns_to_find_and_keep_the_better_arm_within_a_trial():
    """Which of the two arms pays 0.9 (the other 0.1) is drawn per task, so a policy without memory
    earns 0.5 a pull whatever it learns; after training, the last pulls of a trial must earn much more."""
    def tasks(count: int, seed: int) -> list[dict]:
        better = np.random.default_rng(seed).integers(0, 2, size=count)
        return [{"probabilities": [0.9, 0.1] if arm == 0 else [0.1, 0.9]} for arm in better]

    torch.manual_seed(0)
    learner = RL2(_bandit(2), episodes_per_trial=8, hidden_size=16, lr=1e-2, num_minibatches=2, ppo_epochs=4,
                  entropy_coef=0.0, gamma=0.9, gae_lambda=0.9)
    before = learner.evaluate_tasks(tasks(400, 99), seed=1)
    for step in range(60):
        learner.train_step(tasks(32, step), seed=step)
    after = learner.evaluate_tasks(tasks(400, 99), seed=1)
    assert abs(float(before[4:].mean()) - 0.5) < 0.08
    assert float(after[4:].mean()) > 0.75
