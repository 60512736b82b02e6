"""What every gradient-based meta-learner shares: a network, an inner loop, and two paths over tasks.

The network is ``body`` (a backbone) followed by ``head`` (a linear layer with ``outputs``
units: the ways of a classification task, or 1 for regression). Its parameters are taken as a
dict and run through ``torch.func.functional_call``; ``adapt`` is
:func:`~innerloop.functional.inner_loop` on the support loss over the parameters that pass the
adaptation filter (``all``, ``head`` or ``body``), and ``predict`` runs the adapted parameters
on the queries. Each method file (MAML, Meta-SGD, ANIL, Reptile) only states what differs.

Paths over the tasks of a meta-batch (``vectorize``): a plain per-task Python loop (the default,
faster on CPU — see ``benchmarks/maml_speed.py``) or ``torch.func.vmap`` over the task dimension
(the same code under vmap; made for accelerators). Tests check both give the same numbers.

BatchNorm: the backbone uses :class:`~innerloop.nn.task_batch_norm.TaskBatchNorm` (batch
statistics of the current task, no running statistics). With ``transductive=True`` the queries
of a task are normalized together, as in MAML's published evaluation; with
``transductive=False`` each query is normalized together with the support set only (as in
Reptile's non-transductive setting: ``Q`` groups of ``support + 1`` images in one forward pass,
each group with its own statistics), so no query sees another.

Regression predictive: the adapted network's output is the mean of a Gaussian whose standard
deviation ``exp(noise_log_std)`` is one meta-learned number (MAML itself gives no variance). It
is trained by the Gaussian NLL of the queries with the mean detached, so the network's gradient
is exactly MSE's (without ``optim.grad_clip``, whose global norm includes this one number) and
the minimizer is the root mean squared query error; the logged ``loss`` is then MSE + that NLL.
Methods whose outer update is a surrogate (Reptile, iMAML) leave it at its initial value 1.

Memory: with ``backward_per_task`` (the Trainer's default, ``train.backward_per_task``) the
per-task loop of ``meta_loss`` back-propagates each task's query loss as soon as the task is done (``torch.autograd.grad`` of ``loss_t / T`` into a running sum ``meta_gradient``)
and frees that task's graph, so meta-training memory is that of one task, not of the meta-batch
(the plain loops of published implementations do the same by calling ``backward`` per task). It
returns the mean query loss through :class:`InjectedGradient`, whose backward pass hands
``meta_gradient`` to the learner's parameters: the same value, and exactly ``meta_gradient`` as
its gradient with respect to them (a non-finite gradient stays in the gradient, not the value), so ``loss.backward()`` is unchanged for the Trainer (only gradients with
respect to the parameters survive, and no second derivative of the meta-loss: code that
differentiates the meta-loss with respect to anything else, such as hyperparameters outside the
learner, leaves it off). A parameter that no task reaches keeps no gradient (``None``), as with
the full graph. It applies when autograd is on, no ``torch.func`` transform is active, some
parameter requires a gradient and no episode tensor does; otherwise, and under ``vectorize``, the
meta-loss keeps its full graph.

Task workers: with ``backward_per_task`` and ``task_workers = N > 1`` the tasks of a meta-batch
are dealt to ``N`` threads (then memory is that of ``N`` tasks) (task ``t`` to worker ``t mod N``), each running one torch thread on
its own shallow replica of the learner (same parameter tensors; ``functional_call`` swaps
weights on the module it is given, so each thread needs its own modules). On a CPU whose cores
would otherwise split each small per-task operation, whole tasks in parallel keep every core
busy. The workers' gradient sums are added in worker order, so the result does not depend on
thread timing. The caller's thread-local state does not reach worker threads, so one worker
runs when autocast, saved-tensor hooks, ``batch_norm_groups`` or ``batch_norm_step`` are active,
and so do methods whose adaptation calls ``torch.func`` (``thread_safe_adaptation = False``).

When only the head adapts, the body's features of the support and query sets are computed once
per task instead of once per inner step (same numbers, less work).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive, Predictive
from innerloop.functional import (
    SGD,
    Adam,
    InnerOptimizer,
    MomentumSGD,
    Params,
    inner_loop,
    parameter_filter,
)
from innerloop.functional.params import HEAD_PREFIX, parameters_of, run
from innerloop.functional.transforms import inside_transform
from innerloop.nn.stepwise_batch_norm import current_batch_norm_step
from innerloop.nn.task_batch_norm import TaskBatchNorm, batch_norm_groups, current_batch_norm_groups
from innerloop.tasks.episodes import Episodes, occurrence_index

TASK_KINDS = ("classification", "regression")
SECOND_ORDER_ADAM_EPS_ROOT = 1e-12
INNER_OPTIMIZERS = ("sgd", "momentum", "adam")


_WORKER_POOLS: dict[int, ThreadPoolExecutor] = {}
# A forked child inherits the pools but not their threads: it must start its own.
os.register_at_fork(after_in_child=_WORKER_POOLS.clear)


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """A persistent pool of ``workers`` threads (one per worker count)."""
    if workers not in _WORKER_POOLS:
        _WORKER_POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="innerloop-task")
    return _WORKER_POOLS[workers]


class InjectedGradient(torch.autograd.Function):
    """``value`` in the forward pass; in the backward pass, ``gradients[i] * grad_output`` for
    ``params[i]`` (``None`` where a parameter got no gradient), and nothing for ``value``."""

    @staticmethod
    def forward(ctx, value: Tensor, gradients: list[Tensor | None], *params: Tensor) -> Tensor:  # type: ignore[override]
        ctx.gradients = gradients
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        return (None, None, *(None if g is None else g * grad_output for g in ctx.gradients))


@dataclass
class TaskGradients:
    """What one task worker returns: the sum of its tasks' gradients of ``loss_t / T`` (``None``
    for a parameter none of its tasks reached), and each task's detached query outputs and loss
    by task index."""

    gradient_sum: list[Tensor | None]
    outputs: dict[int, Tensor]
    losses: dict[int, Tensor]


def rate_key(name: str) -> str:
    """A module-attribute key for a parameter name (names contain dots, attribute keys may not)."""
    return name.replace(".", "/")


@dataclass(frozen=True)
class AdaptedState:
    """The result of ``adapt`` for one task: all network parameters after the inner loop."""

    params: Params
    support_x: Tensor  # kept for non-transductive prediction


def round_robin_by_label(labels: Tensor, ways: int) -> Tensor:
    """Positions ``[S]`` of ``labels [S]`` ordered by (occurrence within the label, label): the
    first example of every label in label order, then the second of every label, and so on. For a
    support set sorted by label with ``shots`` each this is ``arange(S).view(ways, shots).t().flatten()``;
    noisy, shuffled or unequal support sets are handled too."""
    return torch.argsort(occurrence_index(labels, ways) * ways + labels, stable=True)


class GradientLearner(MetaLearner):
    """Base of gradient-based meta-learners (not registered itself).

    Args:
        backbone: the body; must expose ``embedding_dim``.
        outputs: units of the linear head (ways, or 1 for regression).
        task: ``"classification"`` (cross-entropy, accuracy) or ``"regression"`` (MSE).
        inner_steps: inner steps while meta-training.
        eval_inner_steps: inner steps at evaluation (default ``inner_steps``).
        inner_lr: inner learning rate (Meta-SGD: the initial value of every learned rate).
        order: ``"second"`` or ``"first"`` — how meta-gradients flow through the inner loop.
        adapt: which parameters the inner loop changes: ``"all"``, ``"head"`` or ``"body"``.
        inner_optimizer: ``"sgd"``, ``"momentum"`` (heavy ball) or ``"adam"``.
        inner_batch_size: support examples per inner step (``None``: the whole support set).
        adam_betas: ``(beta1, beta2)`` of the inner Adam.
        inner_momentum: momentum of the ``"momentum"`` inner optimizer.
        checkpoint: recompute each second-order inner step's activations in the backward pass
            instead of storing them (activation memory flat in the number of steps; the
            parameters of each step are still kept; per-task loop only).
        transductive: normalize queries together (True) or each with the support set (False);
            a backbone without batch norm is never transductive.
        vectorize: run the tasks of a meta-batch under ``torch.func.vmap`` instead of a loop.
        backward_per_task: free each task's graph inside ``meta_loss`` (see the module docstring).
        task_workers: threads that take the tasks of a meta-batch in parallel when
            ``backward_per_task`` applies (see the module docstring).
    """

    name = "gradient"
    differentiates_inner_loop = True  # False where no meta-gradient flows through it (Reptile)
    transductive = True  # the default with a batch-norm backbone; instances set their own
    backbone_batch_norm = "task"
    default_adapt = "all"
    fixed_ways = True  # a linear head with one unit per label
    thread_safe_adaptation = True  # adapt/predict may run in task worker threads (no torch.func there)
    task_kinds = TASK_KINDS

    def __init__(self, backbone: nn.Module, outputs: int, task: str = "classification",
                 inner_steps: int = 1, eval_inner_steps: int | None = None, inner_lr: float = 0.4,
                 order: str = "second", adapt: str | None = None, inner_optimizer: str = "sgd",
                 inner_batch_size: int | None = None, adam_betas: tuple[float, float] = (0.9, 0.999),
                 transductive: bool = True, vectorize: bool = False, inner_momentum: float = 0.9,
                 checkpoint: bool = False, backward_per_task: bool = False, task_workers: int = 1) -> None:
        super().__init__()
        if task_workers < 1:
            raise ValueError(f"task_workers must be >= 1, got {task_workers}")
        self.backward_per_task = backward_per_task
        self.task_workers = task_workers
        if task not in TASK_KINDS:
            raise ValueError(f"task must be one of {', '.join(TASK_KINDS)}, got '{task}'")
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {', '.join(INNER_OPTIMIZERS)}, "
                             f"got '{inner_optimizer}'")
        self.network = nn.Sequential()
        self.network.add_module("body", backbone)
        self.network.add_module("head", nn.Linear(backbone.embedding_dim, outputs))
        self.outputs = outputs
        self.task = task
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = inner_lr
        self.order = order
        self.adapt_filter = adapt or self.default_adapt
        keep = parameter_filter(self.adapt_filter)
        self.adapted_names = frozenset(n for n, _ in self.network.named_parameters() if keep(n))
        if not self.adapted_names:
            raise ValueError(f"the filter '{self.adapt_filter}' selects no parameter to adapt")
        self.inner_optimizer_name = inner_optimizer
        self.inner_batch_size = inner_batch_size
        self.adam_betas = tuple(adam_betas)
        self.inner_momentum = inner_momentum
        if checkpoint and vectorize:
            raise ValueError("checkpointed inner loops run per task: set vectorize=False")
        self.checkpoint = checkpoint
        # Without batch norm a query's prediction never depends on the other queries.
        self.has_batch_norm = any(isinstance(m, TaskBatchNorm) for m in backbone.modules())
        self.transductive = transductive and self.has_batch_norm
        self.vectorize = vectorize
        self.metric_name = "accuracy" if task == "classification" else "mse"
        self.higher_is_better = task == "classification"
        if task == "regression":  # the predictive std of every query (see the module docstring)
            self.noise_log_std = nn.Parameter(torch.zeros(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        # Regression runs saved before the noise std existed load with its initial value (std 1).
        key = f"{prefix}noise_log_std"
        if self.task == "regression" and key not in state_dict:
            state_dict[key] = torch.zeros(())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- pieces a method may override ---------------------------------------------------------
    def inner_optimizer(self) -> InnerOptimizer:
        """The inner optimizer (Meta-SGD returns one built on its learned rates)."""
        if self.inner_optimizer_name == "adam":
            # Second order differentiates through sqrt(second moment); eps_root keeps that finite
            # where an inner gradient entry is exactly zero (a dead ReLU unit). It depends on the
            # configuration only, so evaluation runs the inner loop that was meta-trained.
            through = self.order == "second" and self.differentiates_inner_loop
            eps_root = SECOND_ORDER_ADAM_EPS_ROOT if through else 0.0
            return Adam(lr=self.inner_lr, beta1=self.adam_betas[0], beta2=self.adam_betas[1],
                        eps_root=eps_root)
        if self.inner_optimizer_name == "momentum":
            return MomentumSGD(self.inner_lr, self.inner_momentum)
        return SGD(self.inner_lr)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.task == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets)

    @property
    def gradient_flow(self) -> str:
        """How the meta-gradient flows through the inner loop, for reports."""
        return f"{self.order} order"

    @property
    def current_inner_steps(self) -> int:
        return self.inner_steps if self.training else self.eval_inner_steps

    # -- the inner loop -----------------------------------------------------------------------
    def adaptation_cost(self) -> str:
        steps = self.eval_inner_steps
        passes = f"{steps} forward+backward pass{'' if steps == 1 else 'es'}"
        if self._head_only():
            return f"one forward pass of the support set through the body, then {passes} of the head"
        return f"{passes} of the support set through the network"

    def _check_ways(self, ways: int) -> None:
        if self.task == "classification" and ways != self.outputs:
            raise ValueError(f"{self.name} was built with a {self.outputs}-way head and cannot "
                             f"adapt to {ways}-way tasks; train and evaluate with the same ways")

    def _head_only(self) -> bool:
        return all(name.startswith(HEAD_PREFIX) for name in self.adapted_names)

    def _inner_batch(self, inputs: Tensor, targets: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Step ``step``'s minibatch: consecutive slices of the support set taken round-robin
        over labels (:func:`round_robin_by_label`, for any labels in any order), so each slice
        mixes the classes."""
        size = inputs.shape[0]
        if self.inner_batch_size is None or self.inner_batch_size >= size:
            return inputs, targets
        order = torch.arange(size, device=inputs.device)
        if self.task == "classification":
            order = round_robin_by_label(targets, self.outputs)
        start = (step * self.inner_batch_size) % size
        rows = order.roll(-start)[: self.inner_batch_size]
        return inputs[rows], targets[rows]

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> AdaptedState:
        """``num_steps`` inner-optimizer steps on the support loss (see the module docstring)."""
        self._check_ways(ways)
        params = parameters_of(self.network)
        if self._head_only():
            features = self.network.body(support_x)
            if self.order == "first" or not torch.is_grad_enabled():
                features = features.detach()  # first order: inner gradients are constants w.r.t. the body
            head = {n: p for n, p in params.items() if n.startswith(HEAD_PREFIX)}

            def head_loss(p: Params, step: int) -> Tensor:
                x, y = self._inner_batch(features, support_y, step)
                head_params = {n.removeprefix(HEAD_PREFIX): tensor for n, tensor in p.items()}
                return self.loss(run(self.network.head, head_params, x), y)

            adapted_head = inner_loop(head_loss, head, set(head), self.inner_optimizer(),
                                      self.current_inner_steps, self.order, checkpoint=self.checkpoint)
            return AdaptedState({**params, **adapted_head}, support_x)

        def support_loss(p: Params, step: int) -> Tensor:
            x, y = self._inner_batch(support_x, support_y, step)
            return self.loss(run(self.network, p, x), y)

        params = inner_loop(support_loss, params, self.adapted_names, self.inner_optimizer(),
                            self.current_inner_steps, self.order, checkpoint=self.checkpoint)
        return AdaptedState(params, support_x)

    def predict(self, state: AdaptedState, query_x: Tensor) -> Tensor:
        """Outputs ``[Q, outputs]`` of the adapted network on the queries."""
        if self.transductive or not self.has_batch_norm:
            return run(self.network, state.params, query_x)

        return self._grouped_predict(lambda x: run(self.network, state.params, x),
                                     state.support_x, query_x)

    @staticmethod
    def _grouped_predict(network: Callable[[Tensor], Tensor], support_x: Tensor, query_x: Tensor) -> Tensor:
        """Each query through ``network`` together with the support set only, all in one pass."""
        num_queries, num_support = query_x.shape[0], support_x.shape[0]
        support = support_x.unsqueeze(0).expand(num_queries, *support_x.shape)
        batches = torch.cat([support, query_x.unsqueeze(1)], dim=1)  # [Q, S + 1, ...]
        with batch_norm_groups(num_queries):  # each query is normalized with the support set only
            outputs = network(batches.flatten(0, 1))
        return outputs.unflatten(0, (num_queries, num_support + 1))[:, -1]

    # -- over a meta-batch --------------------------------------------------------------------
    def query_logits(self, episodes: Episodes) -> Tensor:
        """Outputs ``[T, Q, outputs]`` for every task: a per-task loop, or vmap with ``vectorize``."""
        if not self.vectorize:
            return super().query_logits(episodes)
        ways = episodes.ways

        def one_task(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
            return self.predict(self.adapt(support_x, support_y, ways), query_x)

        return torch.func.vmap(one_task)(episodes.support_x, episodes.support_y, episodes.query_x)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Mean query loss over tasks after adaptation, and the query accuracy or MSE."""
        if self._backpropagates_per_task(episodes):
            return self._per_task_backward_meta_loss(episodes)
        outputs = self.query_logits(episodes)
        if self.task == "classification":
            return self._classification_loss(outputs, episodes)
        return self._regression_loss(outputs, episodes)

    def _backpropagates_per_task(self, episodes: Episodes) -> bool:
        inputs = (episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
        return (self.backward_per_task and not self.vectorize and torch.is_grad_enabled()
                and not inside_transform() and any(p.requires_grad for p in self.parameters())
                and not any(tensor.requires_grad for tensor in inputs))

    def _parallel_workers(self, num_tasks: int) -> int:
        """How many task workers may run: one when the caller holds thread-local state that
        worker threads would not see (autocast, saved-tensor hooks, batch-norm groups or steps)."""
        workers = min(self.task_workers, num_tasks) if self.thread_safe_adaptation else 1
        if workers > 1:
            try:
                autocast = torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled()
            except TypeError:  # an older torch: no device argument
                autocast = torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
            hooks = torch._C._autograd._top_saved_tensors_default_hooks(False) is not None \
                if hasattr(torch._C._autograd, "_top_saved_tensors_default_hooks") else False
            if autocast or hooks or current_batch_norm_groups() != 1 or current_batch_norm_step() != 0:
                return 1
        return workers

    def _per_task_backward_meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """The meta-loss with each task's graph freed as soon as its gradient is taken (see
        the module docstring); same value, same gradient with respect to the parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        num_tasks = episodes.num_tasks
        workers = self._parallel_workers(num_tasks)
        if workers == 1:
            results = [self._task_gradients(episodes, range(num_tasks), params, threads=None)]
        else:
            shared = {id(tensor): tensor for tensor in (*self.parameters(), *self.buffers())}
            replicas = [self] + [copy.deepcopy(self, dict(shared)) for _ in range(workers - 1)]
            threads = torch.get_num_threads()
            try:
                futures = [worker_pool(workers).submit(replica._task_gradients, episodes,
                                                       range(index, num_tasks, workers), params, 1)
                           for index, replica in enumerate(replicas)]
                results = [future.result() for future in futures]
            finally:
                torch.set_num_threads(threads)
        meta_gradient = results[0].gradient_sum
        for result in results[1:]:
            for index, part in enumerate(result.gradient_sum):
                if part is not None:
                    total = meta_gradient[index]
                    meta_gradient[index] = part if total is None else total.add_(part)
        outputs = {t: o for result in results for t, o in result.outputs.items()}
        losses = {t: value for result in results for t, value in result.losses.items()}
        value = torch.stack([losses[t] for t in range(num_tasks)]).mean()
        loss = InjectedGradient.apply(value, meta_gradient, *params)
        query_outputs = torch.stack([outputs[t] for t in range(num_tasks)])
        if self.task == "classification":
            accuracy = (query_outputs.argmax(-1) == episodes.query_y).float().mean()
            return loss, {"accuracy": float(accuracy)}
        mse = loss.detach()
        variance = torch.exp(2 * self.noise_log_std).expand_as(query_outputs)
        noise_nll = F.gaussian_nll_loss(query_outputs, episodes.query_y, variance, full=True)
        return loss + noise_nll, {"mse": float(mse), "nll": float(noise_nll.detach())}

    def _task_gradients(self, episodes: Episodes, tasks: Sequence[int], params: list[Tensor],
                        threads: int | None) -> TaskGradients:
        """Adapt to each of ``tasks`` and take the gradient of its query loss (over the number
        of tasks) with respect to ``params``; ``threads``: torch threads for this worker."""
        if threads is not None:
            torch.set_num_threads(threads)
        result = TaskGradients([None] * len(params), {}, {})
        for t in tasks:
            episode = episodes[t]
            task_outputs = self.predict(self.adapt(episode.support_x, episode.support_y, episodes.ways),
                                        episode.query_x)
            task_loss = self.loss(task_outputs, episode.query_y)
            if task_loss.requires_grad:
                grads = torch.autograd.grad(task_loss / episodes.num_tasks, params, allow_unused=True)
                for index, grad in enumerate(grads):
                    if grad is not None:
                        total = result.gradient_sum[index]
                        # A fresh buffer: autograd may return an expanded (stride-0) gradient.
                        result.gradient_sum[index] = grad.clone() if total is None else total.add_(grad)
            result.outputs[t] = task_outputs.detach()
            result.losses[t] = task_loss.detach()
        return result

    def _regression_loss(self, outputs: Tensor, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Query MSE plus the Gaussian NLL that fits ``noise_log_std`` (mean detached)."""
        mse = F.mse_loss(outputs, episodes.query_y)
        variance = torch.exp(2 * self.noise_log_std).expand_as(outputs)
        noise_nll = F.gaussian_nll_loss(outputs.detach(), episodes.query_y, variance, full=True)
        return mse + noise_nll, {"mse": float(mse.detach()), "nll": float(noise_nll.detach())}

    def predictive(self, episodes: Episodes) -> Predictive:
        """Softmax of the adapted outputs, or for regression ``N(output, exp(noise_log_std)^2)``."""
        outputs = self.query_logits(episodes)
        if self.task == "classification":
            return CategoricalPredictive.from_logits(outputs)
        return GaussianMixturePredictive.gaussian(outputs, self.noise_log_std.exp().expand_as(outputs))

    def episode_metric(self, episodes: Episodes) -> Tensor:
        """Per-task accuracy (classification) or query MSE (regression)."""
        if self.task == "classification":
            return super().episode_metric(episodes)
        outputs = self.query_logits(episodes)
        return (outputs - episodes.query_y).pow(2).flatten(1).mean(1).to(torch.float64)

