"""MAML-PPO and ProMP outer loops, and the LVC inner objective they rely on."""

from __future__ import annotations

import math

import pytest
import torch

from innerloop.functional.params import run
from innerloop.rl.adaptation import inner_loss
from innerloop.rl.algorithms.maml_ppo import MAMLPPO, clipped_surrogate_loss
from innerloop.rl.algorithms.promp import ProMP, adapted_kl_penalty
from innerloop.rl.envs import make_env
from innerloop.rl.policies import CategoricalMLPPolicy, policy_for
from innerloop.rl.rollout import Episodes, VectorRollout


# the LVC inner objective ---------------------------------------------------------------------------
def _one_state_bandit() -> tuple[CategoricalMLPPolicy, Episodes, torch.Tensor]:
    """A 3-action softmax policy over a single state (logits z = W·1 + b), 4 steps x 2 episodes."""
    torch.manual_seed(3)
    policy = CategoricalMLPPolicy(observation_dim=1, num_actions=3, hidden_sizes=()).double()
    with torch.no_grad():
        policy.head.weight.copy_(torch.tensor([[0.3], [-0.2], [0.5]], dtype=torch.float64))
        policy.head.bias.copy_(torch.tensor([0.1, 0.4, -0.6], dtype=torch.float64))
    actions = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 2]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # the padded step's advantage (9) must be ignored by the masked mean
    advantages = torch.tensor([[1.5, -0.5], [0.7, -1.2], [-0.3, 2.0], [0.4, 9.0]], dtype=torch.float64)
    episodes = Episodes(torch.ones(4, 2, 1, dtype=torch.float64), actions, torch.zeros(4, 2, dtype=torch.float64),
                        mask, {})
    return policy, episodes, advantages


def _flat_loss(policy, episodes, advantages, objective):
    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {"head.weight": flat[:3].reshape(3, 1), "head.bias": flat[3:]}
        return inner_loss(policy, params, episodes, advantages, objective)
    return loss


def test_lvc_has_the_policy_gradient_and_the_expected_hessian_of_the_return():
    policy, episodes, advantages = _one_state_bandit()
    theta = torch.cat([policy.head.weight.detach().reshape(-1), policy.head.bias.detach()])
    # By hand: z = W + b, so dz/dθ = [I I]; ∇_z log π(a) = e_a - p and ∇²_z log π = -(diag p - p pᵀ).
    p = torch.softmax(theta[:3] + theta[3:], dim=0)
    jacobian = torch.cat([torch.eye(3), torch.eye(3)], dim=1).double()
    steps = [(int(episodes.actions[t, b]), float(advantages[t, b]))
             for t in range(4) for b in range(2) if episodes.mask[t, b] > 0]
    hessian_log_prob = -(torch.diag(p) - torch.outer(p, p))
    gradient_z = torch.zeros(3, dtype=torch.float64)
    expected_hessian_z = torch.zeros(3, 3, dtype=torch.float64)
    vpg_hessian_z = torch.zeros(3, 3, dtype=torch.float64)
    for action, advantage in steps:
        score = torch.nn.functional.one_hot(torch.tensor(action), 3).double() - p
        gradient_z -= score * advantage / len(steps)
        expected_hessian_z -= (hessian_log_prob + torch.outer(score, score)) * advantage / len(steps)
        vpg_hessian_z -= hessian_log_prob * advantage / len(steps)

    lvc = _flat_loss(policy, episodes, advantages, "lvc")
    vpg = _flat_loss(policy, episodes, advantages, "vpg")
    lvc_gradient = torch.func.grad(lvc)(theta)
    torch.testing.assert_close(lvc_gradient, jacobian.T @ gradient_z)
    torch.testing.assert_close(torch.func.grad(vpg)(theta), lvc_gradient)
    lvc_hessian = torch.func.hessian(lvc)(theta)
    vpg_hessian = torch.func.hessian(vpg)(theta)
    torch.testing.assert_close(lvc_hessian, jacobian.T @ expected_hessian_z @ jacobian)
    torch.testing.assert_close(vpg_hessian, jacobian.T @ vpg_hessian_z @ jacobian)
    assert (lvc_hessian - vpg_hessian).abs().max() > 0.05
    # the LVC value is -mean_t A_t (every ratio π/⊥π is 1) over the 7 real steps
    assert float(lvc(theta)) == pytest.approx(-sum(advantage for _, advantage in steps) / 7)


# PPO's clipped surrogate --------------------------------------------------------------------------
def test_clipped_surrogate_matches_a_hand_computed_value_and_gradient():
    ratios = torch.tensor([0.5, 1.1, 1.5, 0.7, 1.5, 0.6, 3.0])
    advantages = torch.tensor([1.0, -2.0, 2.0, -1.0, -1.0, -1.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # the last step is padding
    old_log_probs = torch.tensor([-1.0, -0.5, -2.0, -0.3, -1.2, -0.8, -0.1])
    log_probs = (old_log_probs + torch.log(ratios)).requires_grad_()
    loss = clipped_surrogate_loss(log_probs, old_log_probs, advantages, mask, clip=0.2)
    # min(r A, clip(r) A): 0.5 (unclipped), -2.2 (inside), 2.4 (clipped at 1.2), -0.8 (clipped at 0.8),
    # -1.5 (unclipped: the ratio above 1.2 with A < 0 is not clipped), -0.8 (clipped at 0.8)
    assert float(loss.detach()) == pytest.approx(-(0.5 - 2.2 + 2.4 - 0.8 - 1.5 - 0.8) / 6, abs=1e-6)
    loss.backward()
    # d/d log π of -mean min(...): -r A / 6 where the unclipped term is the minimum, 0 where clipped or padded
    expected = torch.tensor([-0.5, 2.2, 0.0, 0.0, 1.5, 0.0, 0.0]) / 6
    torch.testing.assert_close(log_probs.grad, expected)


# ProMP's KL penalty --------------------------------------------------------------------------------
def test_promp_kl_penalty_halves_below_and_doubles_above_the_target_band():
    target = 0.01
    assert adapted_kl_penalty(1e-3, 0.005, target) == pytest.approx(5e-4)
    assert adapted_kl_penalty(1e-3, 0.02, target) == pytest.approx(2e-3)
    assert adapted_kl_penalty(1e-3, 0.01, target) == 1e-3
    assert adapted_kl_penalty(1e-3, 0.015, target) == 1e-3  # 1.5 x target: not above it
    assert adapted_kl_penalty(1e-3, 0.0067, target) == 1e-3  # just above target / 1.5
    assert adapted_kl_penalty(1e-3, 0.0066, target) == pytest.approx(5e-4)


def test_promp_adapts_one_penalty_per_inner_step_from_the_measured_kls():
    learner = ProMP(policy_for(make_env("navigation-2d", horizon=5), hidden_sizes=(8,)), inner_steps=3,
                    kl_penalty=1e-2, kl_target=0.01)
    stats = learner.after_outer_step({"clipped_loss": torch.tensor(0.0), "inner_kl": torch.tensor([0.001, 0.01, 0.05])})
    assert learner.kl_penalties == pytest.approx([5e-3, 1e-2, 2e-2])
    assert stats["inner_kl"] == pytest.approx((0.001 + 0.01 + 0.05) / 3)
    fixed = ProMP(learner.policy, inner_steps=1, kl_penalty=1e-2, adaptive_kl_penalty=False)
    fixed.after_outer_step({"clipped_loss": torch.tensor(0.0), "inner_kl": torch.tensor([0.5])})
    assert fixed.kl_penalties == [1e-2]
    with pytest.raises(ValueError, match="LVC"):
        ProMP(learner.policy, inner_objective="vpg")


# one outer step on 2-D navigation ----------------------------------------------------------------------
def _setup(cls, seed: int = 0, **options):
    torch.manual_seed(seed)
    rollout = VectorRollout(lambda: make_env("navigation-2d", horizon=8))
    env = rollout.envs[0]
    learner = cls(policy_for(env, hidden_sizes=(8,)), inner_lr=0.1, **options)
    batch = learner.collect(rollout, env.sample_tasks(3, seed=seed + 1), 10, seed=seed + 2)
    return learner, batch


def _parameters(learner) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in learner.policy.named_parameters()}


@pytest.mark.parametrize("cls", [MAMLPPO, ProMP])
def test_one_outer_step_lowers_its_own_objective_on_its_batch(cls):
    for seed in range(3):
        learner, batch = _setup(cls, seed, lr=1e-2)
        sampling = learner.sampling_policies(batch)
        penalties = list(getattr(learner, "kl_penalties", []))
        before, parts_before = learner.meta_objective(batch, sampling)
        # at θ_o every ratio is 1: the clipped loss is -mean A' and (ProMP) the inner KLs vanish
        expected = -torch.stack([(r.valid_advantages * r.valid.mask).sum() / r.valid.mask.sum() for r in batch]).mean()
        assert float(parts_before["clipped_loss"]) == pytest.approx(float(expected), abs=1e-6)
        stats = learner.outer_step(batch)
        assert learner.optimizer.state[learner.policy.log_std]["step"] == learner.epochs
        _, parts_after = learner.meta_objective(batch, sampling)
        after = parts_after["clipped_loss"]
        if "inner_kl" in parts_after:  # the penalty as it was during the step (η moves afterwards)
            assert float(parts_before["inner_kl"].abs().max()) < 1e-6
            after = after + (torch.tensor(penalties) * parts_after["inner_kl"]).mean()
            assert float(parts_after["inner_kl"].min()) > 0
        assert float(after) < float(before) - 1e-4
        assert stats["surrogate_loss"] == pytest.approx(float(before), abs=1e-6)
        assert stats["surrogate_loss_after"] == pytest.approx(float(after), abs=1e-5)


def test_the_meta_gradient_differentiates_through_the_inner_step():
    """At θ_o: ∇_θ L(θ'(θ)) = (I - inner_lr ∇²L_inner(θ)) g' with g' = ∇L at θ'_o (chain rule, by a
    Hessian-vector product of the inner loss); the first-order variant keeps only g'."""
    learner, batch = _setup(MAMLPPO)
    sampling = learner.sampling_policies(batch[:1])
    loss, _ = learner.meta_objective(batch[:1], sampling)
    meta_gradient = torch.autograd.grad(loss, list(learner.policy.parameters()))
    rollouts, frozen = batch[0], sampling[0]
    adapted = {name: value.detach().requires_grad_()
               for name, value in learner.adapt(learner.initial_params(detach=True), rollouts, False).items()}
    log_probs = run(learner.policy, adapted, rollouts.valid.observations).log_prob(rollouts.valid.actions)
    outer = clipped_surrogate_loss(log_probs, frozen.valid_log_probs, rollouts.valid_advantages, rollouts.valid.mask,
                                   learner.clip)
    outer_gradient = torch.autograd.grad(outer, list(adapted.values()))
    theta = {name: value.detach().requires_grad_() for name, value in learner.initial_params().items()}
    inner = inner_loss(learner.policy, theta, rollouts.train[0], rollouts.train_advantages[0], "vpg")
    inner_gradient = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(inner_gradient, outer_gradient))
    hessian_vector = torch.autograd.grad(dot, list(theta.values()))
    for got, g, hv in zip(meta_gradient, outer_gradient, hessian_vector):
        torch.testing.assert_close(got, g - learner.inner_lr * hv, rtol=1e-4, atol=1e-6)
    assert max(float((learner.inner_lr * hv).abs().max()) for hv in hessian_vector) > 1e-4

    first_order, batch = _setup(MAMLPPO, first_order=True)
    loss, _ = first_order.meta_objective(batch[:1], first_order.sampling_policies(batch[:1]))
    for got, g in zip(torch.autograd.grad(loss, list(first_order.policy.parameters())), outer_gradient):
        torch.testing.assert_close(got, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [MAMLPPO, ProMP])
def test_zero_learning_rate_or_a_vanishing_gradient_clip_leaves_the_policy(cls):
    learner, batch = _setup(cls, lr=0.0)
    start = _parameters(learner)
    learner.outer_step(batch)
    for name, value in _parameters(learner).items():
        assert torch.equal(value, start[name]), name
    # the gradient is clipped before Adam sees it: a norm of 1e-12 makes Adam's steps ~ lr·1e-4
    moved = {}
    for grad_clip in (None, 1e-12):
        learner, batch = _setup(cls, lr=1e-2, grad_clip=grad_clip)
        start = _parameters(learner)
        learner.outer_step(batch)
        moved[grad_clip] = max(float((value - start[name]).abs().max()) for name, value in _parameters(learner).items())
    assert moved[None] > 1e-2
    assert moved[1e-12] < 1e-5
    with pytest.raises(ValueError, match="epochs >= 1"):
        cls(learner.policy, epochs=0)


def test_promp_matches_lvc_maml_ppo_at_the_sampling_parameters_and_weights_later_inner_steps():
    """At θ_o the KL penalty has zero gradient and the importance weights are 1, so ProMP's first
    meta-gradient is MAML-PPO's with the LVC inner step; away from θ_o its inner step is ∇J^LR."""
    grads = {}
    for cls in (MAMLPPO, ProMP):
        options = {"inner_objective": "lvc", "clip": 0.3} if cls is MAMLPPO else {}
        learner, batch = _setup(cls, **options)
        loss, _ = learner.meta_objective(batch, learner.sampling_policies(batch))
        grads[cls] = torch.autograd.grad(loss, list(learner.policy.parameters()))
    for left, right in zip(grads[MAMLPPO], grads[ProMP]):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-7)

    learner, batch = _setup(ProMP)
    sampling = learner.sampling_policies(batch)
    with torch.no_grad():
        for value in learner.policy.parameters():
            value.add_(0.05 * torch.randn(value.shape, generator=torch.Generator().manual_seed(value.numel())))
    rollouts, frozen = batch[0], sampling[0]
    adapted, _ = learner.adapt_for_outer(rollouts, frozen, create_graph=False)
    theta = learner.initial_params(detach=True)
    theta = {name: value.requires_grad_() for name, value in theta.items()}
    episodes = rollouts.train[0]
    log_probs = run(learner.policy, theta, episodes.observations).log_prob(episodes.actions)
    likelihood_ratio = torch.exp(log_probs - frozen.train_log_probs[0])
    j_lr = (likelihood_ratio * rollouts.train_advantages[0] * episodes.mask).sum() / episodes.mask.sum()
    gradient = torch.autograd.grad(j_lr, list(theta.values()))
    for (name, value), grad in zip(theta.items(), gradient):
        torch.testing.assert_close(adapted[name], value.detach() + learner.inner_lr * grad, rtol=1e-5, atol=1e-6)
    unweighted = learner.adapt(learner.initial_params(detach=True), rollouts, create_graph=False)
    assert max(float((unweighted[n] - adapted[n]).abs().max()) for n in adapted) > 1e-6


@pytest.mark.parametrize("cls", [MAMLPPO, ProMP])
def test_same_seeds_give_bit_identical_parameters(cls):
    results = []
    for _ in range(2):
        learner, batch = _setup(cls, seed=5, lr=1e-2)
        stats = learner.outer_step(batch)
        results.append((_parameters(learner), stats, learner.state_dict()))
    (first, first_stats, _), (second, second_stats, state) = results
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert first_stats == second_stats and all(math.isfinite(v) for v in first_stats.values())
    assert "optimizer" in state and (cls is MAMLPPO or len(state["kl_penalties"]) == 1)
