"""The references the benchmark suite measures innerloop against, on the same tasks and weights.

* ``standard_conv4``: Conv-4 as it is written with ``torch.nn`` (``Conv2d → BatchNorm2d → ReLU →
  MaxPool2d``, NCHW, batch statistics), what a user of a per-task-loop library trains;
* the **plain per-task loop** (what learn2learn's ``MAML.clone()/adapt()`` and every published
  MAML implementation do): for each task, the support loss, ``torch.autograd.grad`` with
  ``create_graph`` (second order) or without (first order), an SGD step, the query loss;
  ANIL's loop adapts only the head on features computed once; ProtoNet's loop embeds each task;
* the **peers** ``higher`` (Grefenstette et al. 2019) and ``TorchOpt`` (Ren et al. 2023), used
  as their documentation shows, when they are installed (the ``bench`` extra);
* the **plain training step**: ordinary supervised cross-entropy training of the standard
  Conv-4 on the same images, one task's images per minibatch — the hardware yardstick.

Each reference is a function ``step()`` that leaves the meta-gradient (or the gradient) of
the mean over tasks in the network's ``.grad``; :func:`gradients` reads it back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.tasks.episodes import Episodes

Step = Callable[[], None]


def standard_conv4(ways: int, in_channels: int = 1, hidden_channels: int = 64, image_size: int = 28,
                   running_statistics: bool = False) -> nn.Sequential:
    """Conv-4 with a linear head, written with ``torch.nn`` layers in the usual order; batch
    norm on batch statistics only (MAML's), or with running statistics (ProtoNet's)."""
    layers: list[nn.Module] = []
    for index in range(4):
        layers += [nn.Conv2d(in_channels if index == 0 else hidden_channels, hidden_channels, 3, padding=1),
                   nn.BatchNorm2d(hidden_channels, track_running_stats=running_statistics), nn.ReLU(),
                   nn.MaxPool2d(2)]
    side = image_size // 16
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(hidden_channels * side * side, ways))


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters into ``target`` in registration order (same shapes, NCHW)."""
    pairs = list(zip(source.parameters(), target.parameters(), strict=True))
    with torch.no_grad():
        for mine, theirs in pairs:
            theirs.copy_(mine.contiguous())


def gradients(module: nn.Module) -> list[Tensor]:
    """The ``.grad`` of every parameter (zeros where none), detached copies, NCHW."""
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().contiguous().clone()
            for p in module.parameters()]


def _sgd_step(params: list[Tensor], grads: tuple[Tensor, ...], lr: float) -> list[Tensor]:
    return [p - lr * g for p, g in zip(params, grads)]


def plain_maml_loop(network: nn.Sequential, episodes: Episodes, inner_lr: float, inner_steps: int,
                    order: str) -> Step:
    """MAML as a per-task Python loop with ``torch.autograd.grad`` (the learn2learn pattern)."""
    names = [name for name, _ in network.named_parameters()]
    tasks = episodes.num_tasks

    def step() -> None:
        network.zero_grad(set_to_none=True)
        for t in range(tasks):
            fast = list(network.parameters())
            for _ in range(inner_steps):
                logits = torch.func.functional_call(network, dict(zip(names, fast)), (episodes.support_x[t],))
                loss = F.cross_entropy(logits, episodes.support_y[t])
                grads = torch.autograd.grad(loss, fast, create_graph=order == "second")
                fast = _sgd_step(fast, grads, inner_lr)
            logits = torch.func.functional_call(network, dict(zip(names, fast)), (episodes.query_x[t],))
            (F.cross_entropy(logits, episodes.query_y[t]) / tasks).backward()

    return step


def plain_anil_loop(network: nn.Sequential, episodes: Episodes, inner_lr: float, inner_steps: int) -> Step:
    """ANIL as a per-task loop: body features once per task, second-order steps on the head."""
    body, head = network[:-1], network[-1]
    tasks = episodes.num_tasks

    def step() -> None:
        network.zero_grad(set_to_none=True)
        for t in range(tasks):
            support, query = body(episodes.support_x[t]), body(episodes.query_x[t])
            weight, bias = head.weight, head.bias
            for _ in range(inner_steps):
                loss = F.cross_entropy(F.linear(support, weight, bias), episodes.support_y[t])
                grad_weight, grad_bias = torch.autograd.grad(loss, (weight, bias), create_graph=True)
                weight, bias = weight - inner_lr * grad_weight, bias - inner_lr * grad_bias
            (F.cross_entropy(F.linear(query, weight, bias), episodes.query_y[t]) / tasks).backward()

    return step


def plain_protonet_loop(embedding: nn.Module, episodes: Episodes) -> Step:
    """Prototypical Networks as a per-task loop: embed the task, class means, distances."""
    tasks, ways = episodes.num_tasks, episodes.ways

    def step() -> None:
        embedding.zero_grad(set_to_none=True)
        for t in range(tasks):
            support, query = embedding(episodes.support_x[t]), embedding(episodes.query_x[t])
            prototypes = torch.stack([support[episodes.support_y[t] == k].mean(0) for k in range(ways)])
            logits = -torch.cdist(query, prototypes).pow(2)
            (F.cross_entropy(logits, episodes.query_y[t]) / tasks).backward()

    return step


def plain_training_step(network: nn.Module, episodes: Episodes) -> Step:
    """Supervised training on the same images: one forward+backward per task's images."""
    images = torch.cat([episodes.support_x, episodes.query_x], dim=1)
    labels = torch.cat([episodes.support_y, episodes.query_y], dim=1)

    def step() -> None:
        network.zero_grad(set_to_none=True)
        for t in range(episodes.num_tasks):
            (F.cross_entropy(network(images[t]), labels[t]) / episodes.num_tasks).backward()

    return step


def peers() -> dict[str, object]:
    """The installed peer libraries by name (``higher``, ``torchopt``)."""
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("higher", "torchopt"):
            try:
                found[name] = __import__(name)
            except ImportError:
                continue
    return found


def higher_maml(network: nn.Sequential, episodes: Episodes, inner_lr: float, inner_steps: int, order: str) -> Step:
    """MAML with ``higher.innerloop_ctx`` (first order: the inner gradients detached)."""
    higher = peers()["higher"]
    optimizer = torch.optim.SGD(network.parameters(), lr=inner_lr)
    tasks = episodes.num_tasks

    def detach(grads: list[Tensor]) -> list[Tensor]:
        return [g.detach() for g in grads]

    def step() -> None:
        network.zero_grad(set_to_none=True)
        for t in range(tasks):
            with higher.innerloop_ctx(network, optimizer, copy_initial_weights=False,
                                      track_higher_grads=True) as (model, differentiable_optimizer):
                for _ in range(inner_steps):
                    loss = F.cross_entropy(model(episodes.support_x[t]), episodes.support_y[t])
                    differentiable_optimizer.step(loss, grad_callback=detach if order == "first" else None)
                (F.cross_entropy(model(episodes.query_x[t]), episodes.query_y[t]) / tasks).backward()

    return step


def torchopt_maml(network: nn.Sequential, episodes: Episodes, inner_lr: float, inner_steps: int) -> Step:
    """Second-order MAML with TorchOpt's ``MetaSGD`` and state extraction/recovery per task."""
    torchopt = peers()["torchopt"]
    tasks = episodes.num_tasks

    def step() -> None:
        network.zero_grad(set_to_none=True)
        optimizer = torchopt.MetaSGD(network, lr=inner_lr)
        for t in range(tasks):
            state = torchopt.extract_state_dict(network)
            for _ in range(inner_steps):
                optimizer.step(F.cross_entropy(network(episodes.support_x[t]), episodes.support_y[t]))
            (F.cross_entropy(network(episodes.query_x[t]), episodes.query_y[t]) / tasks).backward()
            torchopt.recover_state_dict(network, state)

    return step
