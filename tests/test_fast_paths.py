"""The CPU fast paths compute what the plain formulation computes, to the gradient, in float64.

* batch norm: torch's fused kernel (per-task loops) against the written-out form (vmap);
* Conv-4: NHWC inputs against NCHW, and ``conv → norm → pool → ReLU`` against the usual
  ``conv → norm → ReLU → pool`` written independently with ``torch.nn`` layers;
* MAML's default path against a plain per-task loop on that independent network;
* the meta-loss that frees each task's graph (``backward_per_task``) against the full graph.
"""

from __future__ import annotations

import multiprocessing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from innerloop.algorithms import MAML, MetaSGD
from innerloop.nn import MLP, Conv4
from innerloop.tasks.episodes import Episodes
from innerloop.functional.transforms import inside_transform, inside_vmap
from innerloop.nn.task_batch_norm import batch_norm_groups, task_batch_norm, written_out_batch_norm

from test_functional import make_episodes, make_learner


def test_transform_detection_sees_vmap_and_grad_at_any_depth():
    seen = []

    def record(x):
        seen.append((inside_vmap(), inside_transform()))
        return x.sum()

    record(torch.ones(3))
    torch.func.grad(record)(torch.ones(3))
    torch.func.vmap(record)(torch.ones(2, 3))
    torch.func.vmap(torch.func.grad(record))(torch.ones(2, 3))
    assert seen == [(False, False), (False, True), (True, True), (True, True)]


def test_fused_batch_norm_equals_written_out_form_to_second_order():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(6, 4, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(6, 4, 5, 5, generator=generator, dtype=torch.float64)

    def first_and_second(norm):
        out = norm(inputs, weight, bias)
        grads = torch.autograd.grad((out * probe).pow(2).sum(), (inputs, weight, bias), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), (inputs, weight, bias))
        return (out, *grads, *second)

    fused = first_and_second(lambda x, w, b: task_batch_norm(x, w, b))
    written = first_and_second(lambda x, w, b: written_out_batch_norm(x, w, b, 1e-5, 1))
    assert fused[0].grad_fn.name() != written[0].grad_fn.name()  # two implementations ran
    for a, b in zip(fused, written):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_batch_norm_of_one_value_per_channel_does_not_raise():
    """A single example with 1x1 maps: the written-out form (variance 0 → output = bias)."""
    out = task_batch_norm(torch.randn(1, 3, 1, 1), torch.ones(3), torch.full((3,), 0.5))
    torch.testing.assert_close(out, torch.full((1, 3, 1, 1), 0.5))


def usual_conv4(conv: Conv4) -> nn.Sequential:
    """``conv``'s weights in Conv-4 as usually written: NCHW, ``ReLU`` before the pool."""
    layers = []
    for block in conv.blocks:
        layers += [nn.Conv2d(block[0].in_channels, block[0].out_channels, 3, padding=1),
                   nn.BatchNorm2d(block[0].out_channels, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2)]
    usual = nn.Sequential(*layers, nn.Flatten()).double()
    with torch.no_grad():
        for mine, theirs in zip(conv.parameters(), usual.parameters(), strict=True):
            theirs.copy_(mine)
    return usual


def test_conv4_fast_layout_equals_usual_conv4_with_gradients():
    torch.manual_seed(0)
    conv = Conv4(in_channels=1, hidden_channels=6, image_size=28, batch_norm="task").double()
    usual = usual_conv4(conv)
    images = torch.rand(7, 1, 28, 28, dtype=torch.float64)
    layouts = []
    conv.blocks[0][0].register_forward_hook(
        lambda module, inputs, output: layouts.append(output.is_contiguous(memory_format=torch.channels_last)))
    ours, theirs = conv(images), usual(images)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert layouts == [True]  # the first convolution already ran in NHWC
    grads = torch.autograd.grad(ours.pow(2).sum(), list(conv.parameters()))
    expected = torch.autograd.grad(theirs.pow(2).sum(), list(usual.parameters()))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    conv.channels_last = False
    torch.testing.assert_close(conv(images), theirs, rtol=1e-12, atol=1e-12)


def test_maml_default_path_equals_plain_loop_on_usual_network():
    """Second-order MAML (two inner steps) on the fast path against the per-task
    ``torch.autograd.grad`` loop every published implementation runs, on the usual network."""
    torch.manual_seed(0)
    learner = MAML(Conv4(in_channels=1, hidden_channels=3, image_size=16, batch_norm="task"), 3,
                   inner_lr=0.3, inner_steps=2).double()
    usual = nn.Sequential(*usual_conv4(learner.network.body), nn.Linear(3, 3).double())
    with torch.no_grad():
        usual[-1].weight.copy_(learner.network.head.weight)
        usual[-1].bias.copy_(learner.network.head.bias)
    episodes = make_episodes()
    loss, _ = learner.meta_loss(episodes)
    ours = torch.autograd.grad(loss, list(learner.parameters()))
    names = [n for n, _ in usual.named_parameters()]
    total = 0.0
    for t in range(episodes.num_tasks):
        fast = list(usual.parameters())
        for _ in range(2):
            support = torch.func.functional_call(usual, dict(zip(names, fast)), (episodes.support_x[t],))
            grads = torch.autograd.grad(F.cross_entropy(support, episodes.support_y[t]), fast, create_graph=True)
            fast = [p - 0.3 * g for p, g in zip(fast, grads)]
        query = torch.func.functional_call(usual, dict(zip(names, fast)), (episodes.query_x[t],))
        total = total + F.cross_entropy(query, episodes.query_y[t]) / episodes.num_tasks
    theirs = torch.autograd.grad(total, list(usual.parameters()))
    torch.testing.assert_close(loss, total, rtol=1e-12, atol=1e-12)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("method, task", [(MAML, "classification"), (MetaSGD, "classification"),
                                          (MAML, "regression")])
def test_backward_per_task_gives_the_full_graphs_loss_and_meta_gradient(method, task, workers):
    """Freeing each task's graph inside the meta-loss, in one thread or dealt to two task
    workers, changes neither its value nor its gradient with respect to the parameters
    (float64, second order, two inner steps)."""
    if task == "regression":
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(3, 8, 1, generator=generator, dtype=torch.float64) * 10 - 5
        episodes = Episodes(x[:, :4], torch.sin(x[:, :4]), x[:, 4:], torch.sin(x[:, 4:]), 1, 4, 4,
                            torch.zeros(3, 1, dtype=torch.int64))
        learners = [MAML(MLP(1, (8, 8)), 1, task="regression", inner_steps=2, inner_lr=0.1,
                         backward_per_task=flag, task_workers=workers).double() for flag in (False, True)]
        with torch.no_grad():
            for learner in learners:
                learner.noise_log_std.fill_(-0.5)
        learners[1].load_state_dict(learners[0].state_dict())
    else:
        learners = [make_learner(method, "task", inner_steps=2, backward_per_task=flag, task_workers=workers)
                    for flag in (False, True)]
        episodes = make_episodes()
    results = []
    for learner in learners:
        loss, metrics = learner.meta_loss(episodes)
        results.append((loss, metrics, torch.autograd.grad(loss, list(learner.parameters()))))
    threads = torch.get_num_threads()
    again = torch.autograd.grad(learners[1].meta_loss(episodes)[0], list(learners[1].parameters()))
    assert torch.get_num_threads() == threads  # the workers' one-thread setting is undone
    assert all(torch.equal(a, b) for a, b in zip(again, results[1][2]))  # independent of thread timing
    (full_loss, full_metrics, full_grads), (loss, metrics, grads) = results
    assert loss.grad_fn is not None and full_metrics.keys() == metrics.keys()
    torch.testing.assert_close(loss, full_loss, rtol=1e-12, atol=1e-12)
    for key in metrics:
        assert metrics[key] == pytest.approx(full_metrics[key], rel=1e-10, abs=1e-12)
    for a, b in zip(grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _meta_loss_in_this_process() -> float:
    learner = make_learner(MAML, "task", backward_per_task=True, task_workers=2)
    return float(learner.meta_loss(make_episodes())[0].detach())


def test_task_workers_run_in_a_forked_child_after_the_parent_used_them():
    expected = _meta_loss_in_this_process()  # the parent's worker pool now exists
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_meta_loss_in_this_process).get(timeout=120) == pytest.approx(expected)


def test_per_task_meta_loss_keeps_unreached_parameters_without_gradient_and_steps_aside():
    learner = make_learner(MAML, "task", backward_per_task=True, task_workers=2)
    learner.unused = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    episodes = make_episodes()
    learner.meta_loss(episodes)[0].backward()
    assert learner.unused.grad is None and learner.network.head.weight.grad is not None
    frozen = make_learner(MAML, "task", backward_per_task=True).requires_grad_(False)
    assert torch.isfinite(frozen.meta_loss(episodes)[0])  # nothing to differentiate: the full-graph path
    assert learner._parallel_workers(3) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert learner._parallel_workers(3) == 1  # worker threads would not see autocast
    with batch_norm_groups(2):
        assert learner._parallel_workers(3) == 1


def test_per_task_meta_loss_steps_aside_under_torch_func():
    """Under a ``torch.func`` transform the full graph is kept, so the transform sees all of it."""
    learner = make_learner(MAML, "task", backward_per_task=True, task_workers=2)
    episodes = make_episodes()
    seen = []

    def probe(x):
        seen.append(learner._backpropagates_per_task(episodes))
        return x.sum()

    probe(torch.ones(2))
    torch.func.grad(probe)(torch.ones(2))
    assert seen == [True, False]

