"""Meta-RL gradients checked against closed forms: the policy-gradient estimator on a bandit,
Fisher-vector products against the explicit Fisher, the TRPO step's KL constraint, and
MAML-RL's meta-gradient through the inner policy-gradient step against finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence

from innerloop.functional.params import run
from innerloop.rl.adaptation import PolicyGradientMetaLearner, TaskRollouts, inner_loss
from innerloop.rl.algorithms.maml_trpo import MAMLTRPO
from innerloop.rl.envs import make_env
from innerloop.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from innerloop.rl.rollout import Episodes, VectorRollout
from innerloop.rl.trust_region import dot, fisher_vector_product, trust_region_step


def test_policy_gradient_estimate_on_a_bandit_is_unbiased():
    """E[-∇ L_inner] equals ∇ J(θ) = ∇ Σ_a π_θ(a) p_a for a softmax policy over 4 arms."""
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(1, 4, hidden_sizes=())
    with torch.no_grad():
        policy.head.bias.copy_(torch.tensor([0.3, -0.2, 0.5, 0.0]))
    params = dict(policy.named_parameters())
    probabilities = [0.9, 0.2, 0.5, 0.6]
    env = make_env("bandit", num_arms=4)
    rollout = VectorRollout(lambda: make_env("bandit", num_arms=4))
    task = {"probabilities": probabilities}
    expected = torch.softmax(run(policy, params, torch.ones(1, 1)).logits, -1)[0] @ torch.tensor(probabilities)
    true_gradient = torch.autograd.grad(expected, [params["head.bias"]])[0]
    estimates = []
    for seed in range(40):
        episodes = rollout.sample(policy, [params], [task], 500, seed=seed)[0]
        for advantages in (episodes.rewards, episodes.rewards - 0.5):  # a constant baseline keeps it unbiased
            loss = inner_loss(policy, params, episodes, advantages, "vpg")
            estimates.append(-torch.autograd.grad(loss, [params["head.bias"]])[0])
    estimates = torch.stack(estimates)
    error = (estimates.mean(0) - true_gradient).abs()
    standard_error = estimates.std(0) / math.sqrt(len(estimates))
    assert torch.all(error < 4 * standard_error + 1e-4), (estimates.mean(0), true_gradient)
    assert true_gradient.abs().max() > 20 * standard_error.max()  # the test can tell a wrong sign or scale
    assert env.sample_tasks(2, seed=3) == env.sample_tasks(2, seed=3)


def _explicit_fisher_categorical(policy, params, observations):
    """E_s[J_zᵀ (diag(p) - p pᵀ) J_z], J_z the Jacobian of the logits in the flattened parameters."""
    names = list(params)
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def logits(vector):
        pieces, offset = {}, 0
        for n in names:
            pieces[n] = vector[offset:offset + params[n].numel()].view_as(params[n])
            offset += params[n].numel()
        return run(policy, pieces, observations).logits

    jacobian = torch.autograd.functional.jacobian(logits, flat)  # [S, A, P]
    probabilities = torch.softmax(logits(flat), -1)
    fisher = torch.zeros(flat.numel(), flat.numel(), dtype=flat.dtype)
    for s in range(observations.shape[0]):
        p = probabilities[s]
        fisher += jacobian[s].T @ (torch.diag(p) - torch.outer(p, p)) @ jacobian[s]
    return fisher / observations.shape[0], names


def _explicit_fisher_gaussian(policy, params, observations):
    """Mean parameters: E_s[J_μᵀ diag(1/σ²) J_μ]; log std: 2·I; no cross terms."""
    names = list(params)
    flat = torch.cat([params[n].reshape(-1) for n in names])
    sizes = [params[n].numel() for n in names]

    def means(vector):
        pieces = dict(zip(names, [chunk.view_as(params[n]) for chunk, n in zip(vector.split(sizes), names)]))
        return run(policy, pieces, observations).base_dist.loc

    jacobian = torch.autograd.functional.jacobian(means, flat)  # [S, A, P]
    variance = torch.exp(2 * params["log_std"])
    fisher = torch.einsum("sap,a,saq->pq", jacobian, 1 / variance, jacobian) / observations.shape[0]
    offset = sum(sizes[:names.index("log_std")])
    for i in range(params["log_std"].numel()):
        fisher[offset + i, offset + i] += 2.0
    return fisher, names


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_fisher_vector_products_match_the_explicit_fisher(kind):
    torch.manual_seed(1)
    if kind == "categorical":
        policy = CategoricalMLPPolicy(3, 4, hidden_sizes=(5,), nonlinearity="tanh").double()
    else:
        policy = GaussianMLPPolicy(3, 2, hidden_sizes=(5,), nonlinearity="tanh", init_std=0.7).double()
    params = dict(policy.named_parameters())
    observations = torch.randn(6, 3, dtype=torch.float64)
    old = run(policy, {n: v.detach() for n, v in params.items()}, observations)
    kl = kl_divergence(old, run(policy, params, observations)).mean()
    product = fisher_vector_product(kl, params, damping=0.0)
    explicit, names = (_explicit_fisher_categorical if kind == "categorical" else _explicit_fisher_gaussian)(
        policy, params, observations)
    for trial in range(3):
        vector = {n: torch.randn_like(params[n]) for n in names}
        flat_vector = torch.cat([vector[n].reshape(-1) for n in names])
        got = torch.cat([product(vector)[n].reshape(-1) for n in names])
        torch.testing.assert_close(got, explicit @ flat_vector, rtol=1e-9, atol=1e-10)
    damped = fisher_vector_product(kl, params, damping=0.1)(vector)
    torch.testing.assert_close(torch.cat([damped[n].reshape(-1) for n in names]),
                               explicit @ flat_vector + 0.1 * flat_vector, rtol=1e-9, atol=1e-10)


def _navigation_batch(learner, tasks=2, episodes=4, horizon=8, seed=0):
    rollout = VectorRollout(lambda: make_env("navigation-2d", horizon=horizon))
    task_list = rollout.envs[0].sample_tasks(tasks, seed=seed)
    return learner.collect(rollout, task_list, episodes, seed=seed)


def _kl_of_adapted_policies(learner, batch, old_parameters):
    """mean_i KL(π_{θ'_i(old)} ‖ π_{θ'_i(new)}) on the post-update states, recomputed from scratch."""
    new_parameters = {n: p.detach().clone() for n, p in learner.meta_parameters().items()}
    kls = []
    for rollouts in batch:
        old = learner.adapt({**old_parameters}, rollouts, create_graph=False)
        new = learner.adapt({**new_parameters}, rollouts, create_graph=False)
        observations, mask = rollouts.valid.observations, rollouts.valid.mask
        kl = kl_divergence(run(learner.policy, old, observations), run(learner.policy, new, observations))
        kls.append((kl * mask).sum() / mask.sum())
    return float(torch.stack(kls).mean())


@pytest.mark.parametrize("fisher", ["exact", "first-order"])
def test_trpo_step_respects_the_kl_constraint_and_improves_the_surrogate(fisher):
    torch.manual_seed(2)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(16,))
    learner = MAMLTRPO(policy, max_kl=0.005, inner_lr=0.1, fisher=fisher)
    batch = _navigation_batch(learner)
    before = {n: p.detach().clone() for n, p in learner.meta_parameters().items()}
    stats = learner.outer_step(batch)
    assert stats["accepted"] == 1.0 and stats["improvement"] > 0
    kl = _kl_of_adapted_policies(learner, batch, before)
    assert 0 < kl <= 0.005 * (1 + 1e-4)
    assert kl == pytest.approx(stats["kl"], rel=1e-4)
    moved = sum(float((p.detach() - before[n]).abs().sum()) for n, p in learner.meta_parameters().items())
    assert moved > 0


def test_trust_region_step_rejects_every_length_that_breaks_the_constraint():
    parameter = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    parameters = {"w": parameter}
    identity = lambda vector: {"w": vector["w"].clone()}  # noqa: E731 - F = I
    # loss improves everywhere but the "KL" is always too large: nothing may change
    stats = trust_region_step(parameters, {"w": torch.tensor([1.0, 1.0])}, identity, lambda: (-1.0, 1.0),
                              loss_before=0.0, max_kl=0.01)
    assert stats["accepted"] == 0.0 and parameter.tolist() == [1.0, -2.0]
    # with F = I the full step has length sqrt(2 max_kl) along -g
    stats = trust_region_step(parameters, {"w": torch.tensor([3.0, 4.0])}, identity, lambda: (-1.0, 0.0),
                              loss_before=0.0, max_kl=0.02)
    step = parameter.detach() - torch.tensor([1.0, -2.0])
    assert stats["accepted"] == 1.0 and stats["step_fraction"] == 1.0
    torch.testing.assert_close(step, -torch.tensor([0.6, 0.8]) * math.sqrt(2 * 0.02))


def _double(batch: list[TaskRollouts]) -> list[TaskRollouts]:
    def episodes(e: Episodes) -> Episodes:
        return Episodes(e.observations.double(), e.actions.double(), e.rewards.double(), e.mask.double(), e.task)

    return [TaskRollouts(r.task, [episodes(e) for e in r.train], [a.double() for a in r.train_advantages],
                         episodes(r.valid), r.valid_advantages.double()) for r in batch]


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_rl_meta_gradient_matches_finite_differences(first_order):
    """d/dθ of the post-update surrogate through θ' = θ - lr ∇L_inner(θ): autograd vs central differences
    (first order: the derivative with ∇L_inner's dependence on θ held fixed)."""
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(6,), nonlinearity="tanh", init_std=0.5)
    learner = PolicyGradientMetaLearner(policy, inner_lr=0.3, first_order=first_order)
    batch = _double(_navigation_batch(learner, tasks=2, episodes=3, horizon=6))
    learner.policy = policy.double()
    parameters = learner.meta_parameters()
    names = list(parameters)

    def outer_loss(params, create_graph):
        losses = []
        for rollouts in batch:
            adapted = learner.adapt(dict(params), rollouts, create_graph=create_graph)
            losses.append(inner_loss(policy, adapted, rollouts.valid, rollouts.valid_advantages, "vpg"))
        return torch.stack(losses).mean()

    gradient = torch.autograd.grad(outer_loss(parameters, True), [parameters[n] for n in names])
    direction = {n: torch.randn_like(parameters[n]) for n in names}
    analytic = float(sum((g * direction[n]).sum() for g, n in zip(gradient, names)))
    epsilon = 1e-6

    def shifted(sign):
        base = {n: (parameters[n] + sign * epsilon * direction[n]).detach() for n in names}
        if not first_order:
            return float(outer_loss(base, False))
        # first order: the inner gradient is evaluated at θ and held fixed
        total = []
        for rollouts in batch:
            at_theta = learner.adapt({n: parameters[n].detach() for n in names}, rollouts, create_graph=False)
            adapted = {n: base[n] + (at_theta[n] - parameters[n].detach()) for n in names}
            total.append(inner_loss(policy, adapted, rollouts.valid, rollouts.valid_advantages, "vpg"))
        return float(torch.stack(total).mean())

    numeric = (shifted(1) - shifted(-1)) / (2 * epsilon)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)
