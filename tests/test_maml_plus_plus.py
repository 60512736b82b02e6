"""MAML++: per-step batch-norm weights, learned per-layer per-step rates, the multi-step loss and
derivative-order annealing — checked to the gradient in float64 and inside the Trainer."""

from __future__ import annotations

import pytest
import torch
from test_functional import (
    WAYS,
    assert_same_loss_and_meta_gradient,
    directional_check,
    make_episodes,
    make_learner,
    meta_gradient,
    tiny_conv,
)
from test_optimization_training import sinusoid_config

from innerloop.algorithms import MAMLPlusPlus
from innerloop.config import config_from_dict
from innerloop.errors import ConfigError
from innerloop.nn.stepwise_batch_norm import (
    StepwiseTaskBatchNorm,
    batch_norm_step,
    make_batch_norm_stepwise,
)
from innerloop.nn.task_batch_norm import TaskBatchNorm
from innerloop.train.trainer import Trainer, learning_rate


def mamlpp(steps: int = 3, **options) -> MAMLPlusPlus:
    """A float64 MAML++ whose per-step rates and batch-norm pairs all differ (so a wrong step
    index changes the numbers)."""
    options = {"multi_step_loss_steps": 20, "first_order_steps": 0, **options}
    learner = make_learner(MAMLPlusPlus, "task", inner_steps=steps, **options)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in learner.named_parameters():
            if name.startswith("rates."):
                parameter.copy_(0.05 + 0.3 * torch.rand(parameter.shape, generator=generator))
            elif parameter.dim() == 2 and name.startswith("network.body."):  # a batch-norm pair per step
                base = 0.5 if name.endswith("weight") else -0.2
                parameter.copy_(base + 0.8 * torch.rand(parameter.shape, generator=generator))
    return learner


def test_stepwise_batch_norm_uses_the_pair_of_the_current_step_and_starts_as_the_original():
    torch.manual_seed(0)
    network = tiny_conv("task").double()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, TaskBatchNorm):
                module.weight.uniform_(0.5, 1.5)
    images = torch.rand(4, 1, 16, 16, dtype=torch.float64)
    before = network(images)
    replaced = make_batch_norm_stepwise(network, num_sets=3)
    assert replaced == [f"blocks.{i}.1" for i in range(4)]
    assert not any(isinstance(m, TaskBatchNorm) for m in network.modules())
    for step in range(5):  # every pair starts from the original weights; steps past the last clamp
        with batch_norm_step(step):
            torch.testing.assert_close(network(images), before)
    norm = network.blocks[0][1]
    assert isinstance(norm, StepwiseTaskBatchNorm) and norm.weight.shape == (3, 3)
    with torch.no_grad():
        norm.bias[1] += 1.0
    with batch_norm_step(1):
        changed = network(images)
    torch.testing.assert_close(network(images), before)  # outside any block: pair 0
    with batch_norm_step(2):
        torch.testing.assert_close(network(images), before)
    assert not torch.allclose(changed, before)
    with pytest.raises(ValueError, match=">= 0"):
        with batch_norm_step(-1):
            pass


def test_multi_step_loss_weights_anneal_from_uniform_to_the_last_step():
    learner = mamlpp(steps=4, multi_step_loss_steps=100)
    schedule = []
    for step in (0, 25, 50, 99, 100, 5000):
        learner.set_training_step(step)
        schedule.append(learner.step_loss_weights())
    assert schedule[0] == pytest.approx([0.25] * 4)
    for weights in schedule:
        assert sum(weights) == pytest.approx(1.0)
    for weights in schedule[:4]:  # while annealing, no step's weight falls below the floor
        assert min(weights) >= 0.03 / 4 - 1e-12
    finals = [w[-1] for w in schedule]
    assert finals == sorted(finals) and schedule[-1] == [0.0, 0.0, 0.0, 1.0]
    assert schedule[3][0] == pytest.approx(0.03 / 4)  # earlier steps stop at the floor


def test_derivative_order_is_first_until_the_configured_outer_step():
    episodes = make_episodes()
    annealed = mamlpp(first_order_steps=10)
    first = mamlpp(order="first")
    annealed.set_training_step(3)
    first.set_training_step(3)
    assert annealed.order == "first"
    for a, b in zip(meta_gradient(annealed, episodes), meta_gradient(first, episodes)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    annealed.set_training_step(10)
    assert annealed.order == "second"
    differs = [not torch.allclose(a, b) for a, b in
               zip(meta_gradient(annealed, episodes), meta_gradient(first, episodes))]
    assert any(differs)


@pytest.mark.parametrize("training_step", [5, 25])  # with and after the multi-step loss
def test_mamlpp_meta_gradient_matches_finite_differences(training_step):
    learner = mamlpp()
    learner.set_training_step(training_step)
    assert directional_check(learner, make_episodes(tasks=2)) < 1e-6
    names = dict(learner.named_parameters())
    grads = dict(zip(names, meta_gradient(learner, make_episodes(tasks=2))))
    # every learned rate and every step's batch-norm pair receives a gradient
    assert all(float(grads[n].abs().min()) > 0 for n in names if n.startswith("rates."))
    norm_bias = grads["network.body.blocks.0.1.bias"]
    assert norm_bias.shape == (4, 3) and all(float(row.abs().sum()) > 0 for row in norm_bias)


def test_mamlpp_paths_agree_vmapped_and_checkpointed():
    episodes = make_episodes()
    for options in ({"vectorize": True}, {"checkpoint": True}):
        plain, other = mamlpp(), mamlpp(**options)
        for learner in (plain, other):
            learner.set_training_step(5)
        assert_same_loss_and_meta_gradient(plain, other, episodes)


def test_each_batch_norm_pair_serves_the_weights_after_its_number_of_updates():
    learner = mamlpp(steps=2)
    learner.train()
    episode = make_episodes()[0]
    state = learner.adapt(episode.support_x, episode.support_y, WAYS)
    outputs = learner.predict(state, episode.query_x)
    norm = learner.network.body.blocks[2][1]
    with torch.no_grad():
        norm.bias[2] += 0.5  # pair 2: only the query pass after both updates uses it
    changed = learner.adapt(episode.support_x, episode.support_y, WAYS)
    for name in learner.adapted_names:
        torch.testing.assert_close(changed.params[name], state.params[name], rtol=0, atol=0)
    assert not torch.allclose(learner.predict(changed, episode.query_x), outputs)
    with torch.no_grad():
        norm.bias[1] += 0.5  # pair 1: the support pass before the second update
    moved = learner.adapt(episode.support_x, episode.support_y, WAYS)
    assert not torch.equal(moved.params["head.weight"], state.params["head.weight"])


def test_mamlpp_adapts_weights_not_batch_norm_pairs_and_evaluates_with_more_steps():
    learner = mamlpp(steps=2, eval_inner_steps=4)
    assert sorted(learner.rates) == sorted(n.replace(".", "/") for n in learner.adapted_names)
    norms = {f"body.blocks.{i}.1.{kind}" for i in range(4) for kind in ("weight", "bias")}
    assert not norms & learner.adapted_names and len(learner.adapted_names) == 10  # 4 convs + head
    episodes = make_episodes()
    learner.eval()
    with torch.no_grad():
        state = learner.adapt(episodes[0].support_x, episodes[0].support_y, WAYS)
        for name, parameter in learner.network.named_parameters():
            assert torch.equal(state.params[name], parameter) == (name not in learner.adapted_names)
        scores = learner.episode_metric(episodes)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="sgd"):
        mamlpp(inner_optimizer="adam")
    with pytest.raises(ValueError, match="adapt='all'"):
        mamlpp(adapt="head")


def test_trainer_drives_the_schedules_and_the_cosine_rate_ends_at_min_lr(tmp_path):
    values = sinusoid_config("mamlpp", steps=4)
    values["inner"] |= {"steps": 2, "first_order_steps": 1, "multi_step_loss_steps": 2}
    values["optim"] |= {"schedule": "cosine", "min_lr": 1e-5}
    config = config_from_dict(values)
    trainer = Trainer(config, tmp_path, progress=False)
    trainer.fit()
    assert trainer.learner.training_step == 3 and trainer.learner.order == "second"
    assert learning_rate(config, 0) == pytest.approx(1e-3)
    assert learning_rate(config, 4) == pytest.approx(1e-5)
    # The schedules follow the step, so a run extended by resuming equals a straight one
    # (constant outer rate here: a cosine rate depends on train.steps by design).
    constant = {**values, "optim": {**values["optim"], "schedule": "constant"}}
    straight = Trainer(config_from_dict(constant), tmp_path / "straight", progress=False)
    straight.fit()
    Trainer(config_from_dict({**constant, "train": {**constant["train"], "steps": 2}}), tmp_path / "resumed",
            progress=False).fit()
    resumed = Trainer(config_from_dict(constant), tmp_path / "resumed", progress=False)
    resumed.fit()
    for (name, a), b in zip(straight.learner.state_dict().items(), resumed.learner.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="never reach second order"):
        config_from_dict({**values, "inner": {**values["inner"], "first_order_steps": 4}})
    with pytest.raises(ConfigError, match="min_lr"):
        config_from_dict({**values, "optim": {**values["optim"], "min_lr": 1.0}})
    with pytest.raises(ConfigError, match="mamlpp"):
        config_from_dict({**values, "inner": {**values["inner"], "adapt": "head"}})
