"""FTML: Follow the Meta-Leader (Finn, Rajeswaran, Kakade & Levine, ICML 2019, "Online Meta-Learning").

Tasks arrive one at a time (here: an :class:`~innerloop.online.stream.Arrival` of
``classes_per_arrival`` new classes is one task). The learner keeps meta-parameters ``θ`` (all
of the network but its output layer) and a buffer of every task seen so far. At round ``t``:

(a) the new task is learned from the current ``θ``: the output layer starts at zero with one row
    per task class (:func:`~innerloop.online.network.with_zero_output`, so any label order is the
    same task) and ``eval_inner_steps`` SGD steps on the task's training images give

        adapted = θ;  repeat:  adapted = adapted - inner_lr * grad(support_loss)(adapted)

    — the stream protocol probes its accuracy on held-out images after each step (how many
    steps the task needs, and what ``θ`` transfers to it);
(b) the task joins the buffer and ``θ`` takes ``meta_steps_per_arrival`` MAML updates
    (follow the leader: minimize the meta-loss over all tasks seen so far),

        θ = θ - meta_lr · Adam(grad_θ mean_{k ~ buffer} query_loss_k(U_k(θ))),

    each on ``meta_batch_size`` tasks drawn uniformly (with replacement) from the buffer, each
    task's training images split at random, per class, into ``support_shots`` for the inner loop
    ``U_k`` (``num_inner_steps`` steps) and the rest as the query set.

Any seen task, or the union of all seen classes, is predicted by adapting ``θ`` on the buffered
training images of those classes (``logits``), which is how FTML is scored on the protocol's
within-task and all-seen views. Note that FTML stores every training image it has seen, unlike
OML and online fine-tuning, which see each image once.

Before the stream, ``meta_update(episodes)`` trains ``θ`` offline by the same MAML update on
episodes of the background classes (FTML on a task stream that never ends, whose buffer is the
whole background split); ``start_stream`` then keeps that ``θ`` as the starting point of every
stream, so several streams (seeds) start from the same meta-parameters.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.functional import ORDERS, SGD, Params, inner_loop, parameters_of, run
from innerloop.online.network import OUTPUT_NAMES, OnlineNetwork, with_zero_output
from innerloop.online.stream import Arrival, Probe
from innerloop.tasks.episodes import Episodes


def task_labels(labels: Tensor, classes: Tensor) -> Tensor:
    """Stream labels → positions in ``classes`` (``0..len(classes)-1``)."""
    position = torch.full((int(classes.max()) + 1,), -1, dtype=torch.int64)
    position[classes] = torch.arange(classes.numel())
    return position[labels]


class FTML(nn.Module):
    """Follow the Meta-Leader over a stream of tasks with a task buffer (module docstring)."""

    name = "ftml"

    def __init__(self, network: OnlineNetwork, inner_lr: float = 0.1, num_inner_steps: int = 5,
                 eval_inner_steps: int = 10, order: str = "second", meta_lr: float = 1e-3,
                 stream_meta_lr: float | None = None, meta_batch_size: int = 4,
                 meta_steps_per_arrival: int = 5, support_shots: int = 3) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got '{order}'")
        if min(num_inner_steps, eval_inner_steps, meta_batch_size, support_shots) < 1 or meta_steps_per_arrival < 0:
            raise ValueError("num_inner_steps, eval_inner_steps, meta_batch_size and support_shots must be >= 1 "
                             "and meta_steps_per_arrival >= 0")
        self.network = network
        self.inner_lr, self.num_inner_steps, self.eval_inner_steps = inner_lr, num_inner_steps, eval_inner_steps
        self.order, self.meta_lr = order, meta_lr
        self.stream_meta_lr = meta_lr if stream_meta_lr is None else stream_meta_lr
        self.meta_batch_size, self.meta_steps_per_arrival = meta_batch_size, meta_steps_per_arrival
        self.support_shots = support_shots
        self.optimizer = torch.optim.Adam(self.meta_parameters().values(), lr=meta_lr)
        self._start_state: dict[str, Tensor] | None = None
        self.buffer: list[Arrival] = []
        self.sampled_arrivals: list[int] = []  # buffer index of every task a stream meta-update used

    def meta_parameters(self) -> Params:
        """``θ``: every parameter but the output layer, which starts at zero for each task."""
        return {n: p for n, p in parameters_of(self.network).items() if n not in OUTPUT_NAMES}

    # --- the inner loop and the MAML meta-loss ---------------------------------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int, num_steps: int,
              order: str | None = None, on_step=None) -> Params:
        """``θ`` with a zero ``ways``-wide output layer after ``num_steps`` SGD steps on the support."""
        params = with_zero_output(parameters_of(self.network), ways)
        return inner_loop(lambda p, _: F.cross_entropy(run(self.network, p, support_x), support_y),
                          params, list(params), SGD(self.inner_lr), num_steps, order or self.order,
                          on_step=on_step)

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                  ways: int) -> tuple[Tensor, Tensor]:
        """Query loss and accuracy of one task after ``num_inner_steps`` steps from ``θ``."""
        adapted = self.adapt(support_x, support_y, ways, self.num_inner_steps)
        logits = run(self.network, adapted, query_x)
        return F.cross_entropy(logits, query_y), (logits.argmax(dim=1) == query_y).float().mean().detach()

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """MAML's meta-loss ``mean_t query_loss(U_t(θ))`` over a batch of episodes."""
        losses, accuracies = zip(*(self.task_loss(e.support_x, e.support_y, e.query_x, e.query_y, e.ways)
                                   for e in (episodes[t] for t in range(episodes.num_tasks))))
        loss = torch.stack(losses).mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(torch.stack(accuracies).mean())}

    def meta_update(self, episodes: Episodes) -> dict[str, float]:
        """One offline MAML step on ``episodes`` (background pretraining of ``θ``)."""
        self._start_state = None  # the next stream starts from the new θ
        return self._step(self.optimizer, lambda: self.meta_loss(episodes))

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, loss_and_metrics) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = loss_and_metrics()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"FTML meta-loss is {float(loss)}; lower inner_lr or meta_lr")
        loss.backward()
        optimizer.step()
        return metrics

    # --- the stream ---------------------------------------------------------------------------
    def start_stream(self, num_classes: int, seed: int) -> None:
        if self._start_state is None:
            self._start_state = copy.deepcopy(self.network.state_dict())
        else:
            self.network.load_state_dict(self._start_state)
        self.stream_optimizer = torch.optim.Adam(self.meta_parameters().values(), lr=self.stream_meta_lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer, self.sampled_arrivals = [], []
        self._buffer_x: Tensor | None = None
        self._buffer_y: Tensor | None = None

    def learn(self, arrival: Arrival, probe: Probe | None = None) -> None:
        labels = task_labels(arrival.train_y, arrival.classes)
        ways = arrival.classes.numel()
        if ways < 2:
            raise ValueError("FTML learns tasks: give the stream classes_per_arrival >= 2")
        if probe is not None:  # (a) the new task from the current θ, probed after every step
            probe(lambda images: run(self.network, with_zero_output(parameters_of(self.network), ways), images))
            with torch.no_grad():
                self.adapt(arrival.train_x, labels, ways, self.eval_inner_steps, order="first",
                           on_step=lambda _, params: probe(lambda images: run(self.network, params, images)))
        self.buffer.append(arrival)  # (b) follow the leader on every task seen so far
        self._buffer_x = arrival.train_x if self._buffer_x is None else torch.cat([self._buffer_x, arrival.train_x])
        self._buffer_y = arrival.train_y if self._buffer_y is None else torch.cat([self._buffer_y, arrival.train_y])
        for _ in range(self.meta_steps_per_arrival):
            drawn = torch.randint(len(self.buffer), (self.meta_batch_size,), generator=self.generator).tolist()
            self.sampled_arrivals.extend(drawn)
            self._step(self.stream_optimizer, lambda: self._buffer_meta_loss(drawn))

    def _buffer_meta_loss(self, drawn: list[int]) -> tuple[Tensor, dict[str, float]]:
        losses = []
        for index in drawn:
            task = self.buffer[index]
            ways = task.classes.numel()
            labels = task_labels(task.train_y, task.classes)
            shots = labels.numel() // ways
            if not 1 <= self.support_shots < shots:
                raise ValueError(f"support_shots must be in 1..{shots - 1} (the task has {shots} images per class)")
            # a random support/query split of each class's images
            keys = torch.rand(ways, shots, generator=self.generator).argsort(dim=1)
            rows = torch.arange(ways).unsqueeze(1) * shots + keys  # images are class by class
            support, query = rows[:, :self.support_shots].reshape(-1), rows[:, self.support_shots:].reshape(-1)
            loss, _ = self.task_loss(task.train_x[support], labels[support], task.train_x[query], labels[query], ways)
            losses.append(loss)
        loss = torch.stack(losses).mean()
        return loss, {"loss": float(loss.detach())}

    def logits(self, images: Tensor, classes: Tensor) -> Tensor:
        """Adapt ``θ`` on the buffered training images of ``classes``, then score ``images``."""
        if self._buffer_y is None:
            raise RuntimeError("FTML has seen no task of this stream yet; call learn() first")
        keep = torch.isin(self._buffer_y, classes)
        if int(torch.unique(self._buffer_y[keep]).numel()) != classes.numel():
            raise ValueError("FTML can only score classes it has seen (and buffered) in this stream")
        with torch.no_grad():
            adapted = self.adapt(self._buffer_x[keep], task_labels(self._buffer_y[keep], classes),
                                 classes.numel(), self.eval_inner_steps, order="first")
        return run(self.network, adapted, images)
