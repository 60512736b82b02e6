"""The functional core and the gradient-based learners, checked to the gradient in float64.

Meta-gradients are compared with central finite differences of the meta-loss along random
directions, first-order gradients with their definition, Reptile's surrogate with ``θ − φ``,
and the vmapped path with the per-task loop.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from innerloop.algorithms import ANIL, BOIL, CAVIA, MAML, MetaSGD, Reptile
from innerloop.functional import (
    SGD,
    Adam,
    MomentumSGD,
    PerParameterSGD,
    StepwiseSGD,
    inner_loop,
    parameter_filter,
)
from innerloop.nn import Conv4, MLP
from innerloop.nn.task_batch_norm import batch_norm_groups, task_batch_norm
from innerloop.tasks.episodes import Episodes

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 3


def tiny_conv(batch_norm: str = "task") -> Conv4:
    return Conv4(in_channels=1, hidden_channels=3, image_size=16, batch_norm=batch_norm)


def make_learner(cls, batch_norm: str = "task", seed: int = 0, **options):
    torch.manual_seed(seed)
    learner = cls(tiny_conv(batch_norm), WAYS, inner_lr=0.3, **options).double()
    return learner


def make_episodes(seed: int = 0, tasks: int = TASKS) -> Episodes:
    generator = torch.Generator().manual_seed(seed)
    support_x = torch.rand(tasks, WAYS * SHOTS, 1, 16, 16, generator=generator, dtype=torch.float64)
    query_x = torch.rand(tasks, WAYS * QUERIES, 1, 16, 16, generator=generator, dtype=torch.float64)
    return Episodes(
        support_x=support_x, support_y=torch.arange(WAYS).repeat_interleave(SHOTS).repeat(tasks, 1),
        query_x=query_x, query_y=torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1),
        ways=WAYS, shots=SHOTS, queries=QUERIES, class_ids=torch.zeros(tasks, WAYS, dtype=torch.int64))


def meta_gradient(learner, episodes) -> list[torch.Tensor]:
    loss, _ = learner.meta_loss(episodes)
    return list(torch.autograd.grad(loss, list(learner.parameters())))


def assert_same_loss_and_meta_gradient(first, second, episodes) -> None:
    """Two learners (same initialization) give the same meta-loss and meta-gradient to 1e-10."""
    torch.testing.assert_close(first.meta_loss(episodes)[0], second.meta_loss(episodes)[0],
                               rtol=1e-10, atol=1e-12)
    for a, b in zip(meta_gradient(first, episodes), meta_gradient(second, episodes)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def query_objective(learner, episodes) -> torch.Tensor:
    """The loss whose gradient the network's parameters get: the meta-loss, or for a regression
    learner its query MSE (the meta-loss adds the noise std's NLL with the outputs detached)."""
    if getattr(learner, "task", "classification") == "regression":
        return F.mse_loss(learner.query_logits(episodes), episodes.query_y)
    return learner.meta_loss(episodes)[0]


def directional_check(learner, episodes, num_directions: int = 3, eps: float = 1e-7) -> float:
    """Largest relative error between ``grad · v`` and a central difference along ``v``
    (the regression noise std, fitted by its own NLL, is held fixed; see query_objective)."""
    grads = meta_gradient(learner, episodes)
    names = [name for name, _ in learner.named_parameters()]
    params = list(learner.parameters())
    generator = torch.Generator().manual_seed(123)
    worst = 0.0
    for _ in range(num_directions):
        directions = [torch.randn(p.shape, generator=generator, dtype=p.dtype) * (name != "noise_log_std")
                      for name, p in zip(names, params)]
        analytic = sum(float((g * v).sum()) for g, v in zip(grads, directions))
        losses = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, v in zip(params, directions):
                    p.add_(sign * eps * v)
            with torch.enable_grad():
                losses.append(float(query_objective(learner, episodes).detach()))
            with torch.no_grad():
                for p, v in zip(params, directions):
                    p.sub_(sign * eps * v)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        worst = max(worst, abs(analytic - numeric) / max(abs(numeric), 1e-12))
    return worst


@pytest.mark.parametrize("batch_norm", ["task", "none"])
@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_maml_gradient_matches_finite_differences(batch_norm, steps):
    learner = make_learner(MAML, batch_norm, inner_steps=steps)
    assert directional_check(learner, make_episodes()) < 1e-6


def test_vmapped_second_order_gradient_with_batch_norm_matches_finite_differences():
    learner = make_learner(MAML, "task", inner_steps=2, vectorize=True)
    assert directional_check(learner, make_episodes()) < 1e-6


def test_non_transductive_prediction_gradient_matches_finite_differences():
    learner = make_learner(MAML, "task", inner_steps=1, transductive=False)
    assert directional_check(learner, make_episodes(tasks=2)) < 1e-6


def test_meta_sgd_gradient_including_the_rates_matches_finite_differences():
    learner = make_learner(MetaSGD, "task", inner_steps=2)
    assert {name for name, _ in learner.named_parameters() if name.startswith("rates.")}
    assert directional_check(learner, make_episodes()) < 1e-6
    rate_grads = [g for (name, _), g in zip(learner.named_parameters(), meta_gradient(learner, make_episodes()))
                  if name.startswith("rates.")]
    assert all(float(g.abs().sum()) > 0 for g in rate_grads)


def _manual_adaptation(learner, episode, steps: int, create_graph: bool,
                       head_only: bool = False) -> dict[str, torch.Tensor]:
    """Plain autograd SGD on the support loss, written independently of the functional core."""
    params = dict(learner.network.named_parameters())
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(
            torch.func.functional_call(learner.network, params, (episode.support_x,)), episode.support_y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = {n: p - learner.inner_lr * g if (not head_only or n.startswith("head.")) else p
                  for (n, p), g in zip(params.items(), grads)}
    return params


@pytest.mark.parametrize("cls", [MAML, ANIL])
def test_first_order_gradient_is_the_query_gradient_at_the_adapted_weights(cls):
    learner = make_learner(cls, "task", inner_steps=2, order="first")
    episodes = make_episodes()
    ours = meta_gradient(learner, episodes)
    expected = [torch.zeros_like(p) for p in learner.parameters()]
    head_only = cls is ANIL
    for t in range(TASKS):
        episode = episodes[t]
        adapted = {n: p.detach().requires_grad_() for n, p in
                   _manual_adaptation(learner, episode, 2, create_graph=False, head_only=head_only).items()}
        logits = torch.func.functional_call(learner.network, adapted, (episode.query_x,))
        loss = torch.nn.functional.cross_entropy(logits, episode.query_y) / TASKS
        for slot, g in zip(expected, torch.autograd.grad(loss, list(adapted.values()))):
            slot += g
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_second_order_gradient_equals_plain_autograd_through_the_unrolled_loop():
    learner = make_learner(MAML, "task", inner_steps=3)
    episodes = make_episodes()
    total = 0
    for t in range(TASKS):
        episode = episodes[t]
        adapted = _manual_adaptation(learner, episode, 3, create_graph=True)
        logits = torch.func.functional_call(learner.network, adapted, (episode.query_x,))
        total = total + torch.nn.functional.cross_entropy(logits, episode.query_y) / TASKS
    expected = torch.autograd.grad(total, list(learner.parameters()))
    for a, b in zip(meta_gradient(learner, episodes), expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_reptile_surrogate_gradient_is_theta_minus_the_mean_adapted_weights():
    learner = make_learner(Reptile, "task", inner_steps=3)
    episodes = make_episodes()
    ours = meta_gradient(learner, episodes)
    adapted = [_manual_adaptation(learner, episodes[t], 3, create_graph=False) for t in range(TASKS)]
    for (name, parameter), grad in zip(learner.network.named_parameters(), ours):
        mean_adapted = sum(a[name] for a in adapted) / TASKS
        torch.testing.assert_close(grad, parameter.detach() - mean_adapted.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [MAML, MetaSGD, ANIL, BOIL, CAVIA])
@pytest.mark.parametrize("order", ["second", "first"])
def test_vmapped_and_looped_paths_agree(cls, order):
    loop = make_learner(cls, "task", inner_steps=2, order=order)
    vmapped = make_learner(cls, "task", inner_steps=2, order=order, vectorize=True)
    assert_same_loss_and_meta_gradient(loop, vmapped, make_episodes())


def test_evaluation_without_autograd_takes_the_same_inner_steps():
    learner = make_learner(MAML, "task", inner_steps=1, eval_inner_steps=3).eval()
    episodes = make_episodes()
    with torch.no_grad():
        scored = learner.query_logits(episodes)
    expected = torch.stack([
        torch.func.functional_call(learner.network, _manual_adaptation(learner, episodes[t], 3, False),
                                   (episodes[t].query_x,)) for t in range(TASKS)])
    torch.testing.assert_close(scored, expected, rtol=1e-10, atol=1e-12)
    assert not scored.requires_grad


def test_task_batch_norm_matches_torch_batch_norm_in_training_mode():
    inputs = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    weight, bias = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = torch.nn.functional.batch_norm(inputs, None, None, weight, bias, training=True)
    torch.testing.assert_close(task_batch_norm(inputs, weight, bias), expected, rtol=1e-12, atol=1e-12)


def test_inner_optimizers_are_pure_and_follow_their_update_rules():
    params = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    grads = {"w": torch.tensor([0.5, 0.25], dtype=torch.float64)}
    new, _ = SGD(0.1).update(grads, (), params)
    torch.testing.assert_close(new["w"], torch.tensor([0.95, -2.025], dtype=torch.float64))
    rates = {"w": torch.tensor([0.1, 1.0], dtype=torch.float64)}
    new, _ = PerParameterSGD(rates).update(grads, (), params)
    torch.testing.assert_close(new["w"], torch.tensor([0.95, -2.25], dtype=torch.float64))
    adam = Adam(lr=0.1, beta1=0.9, beta2=0.999, eps=0.0)
    state = adam.init(params)
    new, state = adam.update(grads, state, params)
    # The first bias-corrected Adam step moves each entry by lr * sign(grad).
    torch.testing.assert_close(new["w"], params["w"] - 0.1, rtol=1e-12, atol=1e-12)
    assert params["w"].tolist() == [1.0, -2.0] and state.step == 1


@pytest.mark.parametrize("ours, reference", [
    (Adam(lr=0.05, beta1=0.0, beta2=0.99), lambda w: torch.optim.Adam(w, lr=0.05, betas=(0.0, 0.99))),
    (MomentumSGD(0.02, 0.8), lambda w: torch.optim.SGD(w, lr=0.02, momentum=0.8)),
    (MomentumSGD(0.02, 0.8, nesterov=True), lambda w: torch.optim.SGD(w, lr=0.02, momentum=0.8, nesterov=True)),
])
def test_inner_optimizers_match_their_torch_optim_counterparts(ours, reference):
    torch.manual_seed(0)
    target = torch.randn(5, dtype=torch.float64)

    def loss_fn(params, step):
        return ((params["w"] - target) ** 2 * torch.arange(1, 6)).sum()

    adapted = inner_loop(loss_fn, {"w": torch.zeros(5, dtype=torch.float64)}, {"w"}, ours, 7, "first")
    weight = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    optimizer = reference([weight])
    for _ in range(7):
        optimizer.zero_grad()
        loss_fn({"w": weight}, 0).backward()
        optimizer.step()
    torch.testing.assert_close(adapted["w"], weight.detach(), rtol=1e-10, atol=1e-12)


def test_parameter_filters_and_inner_loop_errors():
    names = ["body.blocks.0.0.weight", "head.weight", "head.bias"]
    assert [n for n in names if parameter_filter("head")(n)] == ["head.weight", "head.bias"]
    assert [n for n in names if parameter_filter("body")(n)] == ["body.blocks.0.0.weight"]
    with pytest.raises(ValueError, match="unknown parameter filter"):
        parameter_filter("tail")
    with pytest.raises(KeyError, match="no parameter"):
        inner_loop(lambda p, s: p["w"].sum(), {"w": torch.ones(1)}, {"v"}, SGD(0.1), 1)
    with pytest.raises(ValueError, match="order"):
        inner_loop(lambda p, s: p["w"].sum(), {"w": torch.ones(1)}, {"w"}, SGD(0.1), 1, "third")


def test_head_built_for_other_ways_is_a_clear_error():
    learner = make_learner(MAML)
    episode = make_episodes()[0]
    with pytest.raises(ValueError, match="3-way head"):
        learner.adapt(episode.support_x, episode.support_y, 5)


def test_regression_learner_on_an_mlp_matches_finite_differences():
    torch.manual_seed(0)
    learner = MAML(MLP(1, (8, 8)), 1, task="regression", inner_steps=2, inner_lr=0.05).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(TASKS, 10, 1, generator=generator, dtype=torch.float64) * 10 - 5
    y = torch.sin(x)
    episodes = Episodes(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:], 1, 5, 5,
                        torch.zeros(TASKS, 1, dtype=torch.int64))
    assert directional_check(learner, episodes) < 1e-6
    assert learner.episode_metric(episodes).shape == (TASKS,)
    # the noise std's gradient: d/d log s of mean[log s + (y - mu)^2 / (2 s^2)] = 1 - mse / s^2
    with torch.no_grad():
        learner.noise_log_std.fill_(0.3)
    loss, metrics = learner.meta_loss(episodes)
    (gradient,) = torch.autograd.grad(loss, [learner.noise_log_std])
    assert float(gradient) == pytest.approx(1 - metrics["mse"] / math.exp(0.6), rel=1e-9)


def test_grouped_batch_norm_normalizes_each_group_on_its_own():
    inputs = torch.randn(3 * 4, 2, 3, 3, dtype=torch.float64)
    weight, bias = torch.randn(2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    expected = torch.cat([task_batch_norm(chunk, weight, bias) for chunk in inputs.split(4)])
    with batch_norm_groups(3):
        torch.testing.assert_close(task_batch_norm(inputs, weight, bias), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(task_batch_norm(inputs, weight, bias, num_groups=3), expected)
    with pytest.raises(ValueError, match="equal batch-norm groups"):
        task_batch_norm(inputs, weight, bias, num_groups=5)


def test_non_transductive_prediction_equals_one_forward_pass_per_query():
    learner = make_learner(MAML, "task", inner_steps=1, transductive=False)
    episode = make_episodes()[0]
    state = learner.adapt(episode.support_x, episode.support_y, WAYS)
    expected = torch.stack([
        torch.func.functional_call(learner.network, state.params,
                                   (torch.cat([episode.support_x, query[None]]),))[-1]
        for query in episode.query_x])
    torch.testing.assert_close(learner.predict(state, episode.query_x), expected, rtol=1e-10, atol=1e-12)
    # and no query influences another
    changed = episode.query_x.clone()
    changed[1:] = 0
    torch.testing.assert_close(learner.predict(state, changed)[0], expected[0], rtol=1e-10, atol=1e-12)


def test_second_order_meta_gradient_through_inner_adam_stays_finite_at_zero_gradients():
    torch.manual_seed(0)
    learner = MAML(MLP(1, (8,)), 1, task="regression", inner_steps=2, inner_lr=0.01,
                   inner_optimizer="adam").double()
    with torch.no_grad():  # one dead ReLU unit: its weights get exactly zero inner gradients
        learner.network.body.layers[0].weight[0] = 0.0
        learner.network.body.layers[0].bias[0] = -1.0
    x = torch.linspace(-5, 5, 20, dtype=torch.float64).view(1, 20, 1)
    episodes = Episodes(x[:, ::2], torch.sin(x[:, ::2]), x[:, 1::2], torch.sin(x[:, 1::2]), 1, 10, 10,
                        torch.zeros(1, 1, dtype=torch.int64))
    grads = meta_gradient(learner, episodes)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert learner.inner_optimizer().eps_root > 0
    with torch.no_grad():  # evaluation runs the same inner update as meta-training
        assert learner.inner_optimizer().eps_root > 0
    assert directional_check(learner, episodes) < 1e-6


@pytest.mark.parametrize("cls, adapted_prefix", [(ANIL, "head."), (BOIL, "body.")])
def test_head_or_body_only_learners_match_finite_differences_and_adapt_only_their_part(cls, adapted_prefix):
    learner = make_learner(cls, "task", inner_steps=2)
    assert directional_check(learner, make_episodes()) < 1e-6
    episode = make_episodes()[0]
    state = learner.adapt(episode.support_x, episode.support_y, WAYS)
    for name, parameter in learner.network.named_parameters():
        if not name.startswith(adapted_prefix):
            assert torch.equal(state.params[name], parameter), name
        elif name.endswith("weight"):  # (conv biases before batch norm have zero gradient)
            assert not torch.equal(state.params[name], parameter), name


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_gradient_through_momentum_and_adam_inner_loops_matches_finite_differences(optimizer, steps):
    learner = make_learner(MAML, "task", inner_steps=steps, inner_optimizer=optimizer)
    if optimizer == "adam":
        # Adam's step m / (sqrt(v) + eps) is ~ lr * sign(grad) for tiny gradients (the conv biases
        # before batch norm have zero gradient up to rounding): a finite difference cannot follow
        # it. A larger eps makes the update smooth enough to check the chain rule through it.
        learner.inner_optimizer = lambda: Adam(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-2, eps_root=1e-12)
    assert directional_check(learner, make_episodes()) < 1e-6


def test_stepwise_rates_follow_the_schedule_and_learned_per_layer_rates_get_exact_gradients():
    params = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    schedule = StepwiseSGD({"*": torch.tensor([0.5, 0.25], dtype=torch.float64)})
    out = inner_loop(lambda p, step: (p["w"] ** 2).sum() / 2, params, {"w"}, schedule, 2, "first")
    torch.testing.assert_close(out["w"], params["w"] * 0.5 * 0.75)  # w <- w - rate * w, twice
    with pytest.raises(IndexError, match="one rate per inner step"):
        inner_loop(lambda p, step: (p["w"] ** 2).sum(), params, {"w"}, schedule, 3, "first")

    # Learned per-layer per-step rates (MAML++'s LSLR) through a second-order MAML meta-gradient.
    learner = make_learner(MAML, "task", inner_steps=3)
    layer_of = {name: name.rsplit(".", 1)[0] for name, _ in learner.network.named_parameters()}
    generator = torch.Generator().manual_seed(5)
    rates = {layer: (0.1 + 0.3 * torch.rand(3, generator=generator, dtype=torch.float64)).requires_grad_()
             for layer in set(layer_of.values())}
    learner.inner_optimizer = lambda: StepwiseSGD({name: rates[layer] for name, layer in layer_of.items()})
    episodes = make_episodes()
    loss, _ = learner.meta_loss(episodes)
    layer = "head"
    analytic = torch.autograd.grad(loss, rates[layer])[0]
    for step in range(3):
        shifted = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                rates[layer][step] += sign * 1e-7
            shifted.append(float(learner.meta_loss(episodes)[0].detach()))
            with torch.no_grad():
                rates[layer][step] -= sign * 1e-7
        numeric = (shifted[0] - shifted[1]) / 2e-7
        assert abs(float(analytic[step]) - numeric) < 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("transductive", [True, False])
def test_cavia_gradient_matches_finite_differences_and_adapts_only_a_fresh_context(transductive):
    learner = make_learner(CAVIA, "task", inner_steps=2, context_dim=4, transductive=transductive)
    assert directional_check(learner, make_episodes(tasks=2)) < 1e-6
    episodes = make_episodes()
    states = [learner.adapt(episodes[t].support_x, episodes[t].support_y, WAYS) for t in range(2)]
    for name, parameter in learner.network.named_parameters():
        assert all(torch.equal(state.params[name], parameter) for state in states), name
    contexts = [state.params["context"] for state in states]
    assert not torch.equal(contexts[0], contexts[1]) and float(contexts[0].detach().abs().sum()) > 0
    learner.inner_steps = 0  # no step: the context is zero for every task
    assert float(learner.adapt(episodes[0].support_x, episodes[0].support_y, WAYS).params["context"].abs().sum()) == 0


@pytest.mark.parametrize("cls, optimizer", [(MAML, "sgd"), (MAML, "adam"), (MetaSGD, "sgd"), (ANIL, "momentum"),
                                            (CAVIA, "sgd")])
def test_checkpointed_unrolls_give_the_same_meta_gradient(cls, optimizer):
    plain = make_learner(cls, "task", inner_steps=3, inner_optimizer=optimizer)
    recomputed = make_learner(cls, "task", inner_steps=3, inner_optimizer=optimizer, checkpoint=True)
    if optimizer == "adam":
        plain.inner_lr = recomputed.inner_lr = 0.01
    assert_same_loss_and_meta_gradient(plain, recomputed, make_episodes())
    with pytest.raises(ValueError, match="per task"):
        make_learner(cls, "task", checkpoint=True, vectorize=True)
