"""Distributed meta-training: one process per rank, each on a slice of every meta-batch.

Launch (a rank per process; ``torchrun`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``)::

    torchrun --standalone --nproc_per_node 2 -m innerloop train configs/omniglot/maml-5w1s.yaml \\
        --set num_threads=1

Each rank runs ``num_threads`` intra-op threads, so ranks x ``num_threads`` should not exceed
the cores (on a 2-core machine, 2 ranks with ``--set num_threads=1``). Without ``WORLD_SIZE``
(or with ``WORLD_SIZE=1``) no process group is created and training is the single-process path.

The scheme, step ``s`` of a world of ``W`` ranks, meta-batch ``T``:

* **Sampling.** Every rank draws the plan of the *whole* meta-batch of step ``s`` from the
  generator seeded by ``step_seed(config.seed, s)`` (a few index draws, cheap), then builds the
  episodes of its own contiguous :func:`rank_slice` only. The slices partition the meta-batch,
  so no task is repeated across ranks and their union is exactly the meta-batch a single
  process would train on: a ``W``-rank run reproduces the 1-rank run up to the order of
  floating-point sums (for methods whose meta-loss is a mean of per-task terms; methods that
  normalize over the whole meta-batch, e.g. BatchNorm in training mode over all tasks' images
  at once, see statistics of their slice instead, as ``DistributedDataParallel`` does).
* **Torch's random stream** (noise of stochastic methods): rank 0 keeps the stream of a
  single-process run (saved in ``last.pt``); a rank ``r > 0`` reseeds it at every step from
  :func:`rank_step_seed` ``(seed, r, s)``, so ranks draw different noise and a resumed run draws
  the same noise as an uninterrupted one without saving every rank's generator.
* **Averaging.** With ``weight = len(slice) / T``, the loss on a slice is the mean over its
  tasks, so ``sum_r weight_r * grad(loss_r)`` is the gradient of the mean over the whole
  meta-batch, exactly, even for uneven slices. :func:`average_gradients` all-reduces
  ``weight * grad`` in one flat buffer. Surrogate losses (Reptile, iMAML) are means over tasks
  of terms whose gradient is the prescribed update, and average the same way. Floating-point
  buffers that the forward pass updates (BatchNorm running statistics) are averaged as weighted
  updates (:func:`average_buffer_updates`), so replicas stay identical. Logged scalars are
  averaged with the same weights (:func:`average_scalars`).
* **One outer optimizer per rank.** The averaged gradient is bitwise the same on every rank, so
  every rank clips, checks and steps to the same weights: replicas never drift and no weights
  are sent. Whether the loss is finite is decided over all ranks (:func:`any_rank`), so all
  ranks stop together.

Rank 0 alone writes ``config.yaml``, ``metrics.jsonl``, ``last.pt`` and ``best.pt`` and runs
validation (the others wait for its result, :func:`broadcast_scalars`). On resume every rank
reads ``last.pt`` from the run directory, which must be on a filesystem all ranks share, after
a barrier (:func:`wait_for_all_ranks`: rank 0 may still be writing the ``last.pt`` of a run
that just ended); :func:`check_replicas_agree` stops a run whose ranks resumed different
states. A run may be resumed with another number of ranks: nothing in ``last.pt`` depends on it.

"Up to the order of floating-point sums" is a start, not a bound: training amplifies such
differences step by step (MAML on Omniglot: the first losses of a 2-rank and a 1-rank run agree
to 1e-8, after 4 steps to 1e-4), just as changing ``num_threads`` does in one process.

Backend: ``gloo`` on CPU; where CUDA is available, ``cpu:gloo,cuda:nccl`` (NCCL for tensors on
GPUs, gloo for those on the CPU), each rank on GPU ``LOCAL_RANK``. The Trainer keeps models on
the CPU today, so its collectives go through gloo.
"""

from __future__ import annotations

import hashlib
import os
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from innerloop.errors import InnerloopError

LAUNCH_COMMAND = "torchrun --standalone --nproc_per_node N -m innerloop train CONFIG --set num_threads=1"
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ProcessPlace:
    """This process's place in the run: its ``rank`` among ``world_size`` processes and the
    process group's ``backend`` (``None``: a single process, no process group)."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, validates and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = ProcessPlace()


def current_place() -> ProcessPlace:
    """The place given by the initialized default process group, else :data:`SINGLE_PROCESS`."""
    if dist.is_available() and dist.is_initialized():
        return ProcessPlace(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
    return SINGLE_PROCESS


def default_backend() -> str:
    """``gloo`` on CPU; ``cpu:gloo,cuda:nccl`` where CUDA and NCCL are available."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_distributed(timeout: timedelta | None = None) -> ProcessPlace:
    """Join the process group described by torchrun's environment and return this place.

    ``WORLD_SIZE`` unset or 1 means a single process: no process group is created. An already
    initialized default group is reused. ``timeout`` bounds how long a collective waits for the
    other ranks (torch's default: 30 minutes for gloo).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return current_place()
    if world_size <= 1:
        return SINGLE_PROCESS
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise InnerloopError(
            f"WORLD_SIZE={world_size} is set but {', '.join(missing)} is not: launch distributed "
            f"training with `{LAUNCH_COMMAND}` (torchrun sets them all), or unset WORLD_SIZE to "
            f"train in one process.")
    if not dist.is_available():
        raise InnerloopError("this PyTorch build has no torch.distributed; install a build that "
                             "has it, or train in one process (`innerloop train CONFIG`).")
    backend = default_backend()
    if "nccl" in backend:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    options = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend, init_method="env://", **options)
    return current_place()


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the process group, if one was created (safe to call in a single process).

    With ``wait`` (after a run) every rank first waits for the others and for gloo to let go of
    the last collective's tensor (:func:`_settle_last_collective`). After an error pass
    ``wait=False``: the other ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            _settle_last_collective()
        dist.destroy_process_group()


def _settle_last_collective(timeout_s: float = 10.0) -> None:
    """A barrier whose tensor gloo's worker thread has released before this returns.

    gloo finishes a collective on its own thread and drops its reference to the tensor there
    afterwards, which takes the GIL. If the interpreter is already shutting down by then, that
    thread cannot take the GIL, and the process aborts with "terminate called without an active
    exception" (one run in about ten here, on the rank that exits first; the process group
    outlives ``destroy_process_group``, so its threads are not joined). Waiting, with the GIL
    released, until the barrier's tensor is gone from Python closes that window.
    """
    token = torch.zeros(1, dtype=torch.float64)
    released = weakref.ref(token)
    dist.all_reduce(token, op=dist.ReduceOp.SUM)
    del token
    deadline = time.monotonic() + timeout_s
    while released() is not None and time.monotonic() < deadline:
        time.sleep(0.001)


def rank_slice(num_tasks: int, rank: int, world_size: int) -> slice:
    """The contiguous tasks of ``rank``: slices as even as possible (sizes differ by at most
    one, the larger first) that together cover ``0..num_tasks-1`` once."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1 with world_size >= 1, got rank={rank}, "
                         f"world_size={world_size}")
    if num_tasks < world_size:
        raise InnerloopError(
            f"a meta-batch of {num_tasks} task(s) cannot be split over {world_size} processes "
            f"(each needs at least one task): raise train.meta_batch_size to at least "
            f"{world_size} or lower --nproc_per_node to at most {num_tasks}.")
    base, extra = divmod(num_tasks, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def rank_step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed of torch's stream on ``rank`` > 0 at ``step``, unlike every other's."""
    digest = hashlib.sha256(f"innerloop-rank:{seed}:{rank}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _weighted_sum_over_ranks(tensors: list[Tensor], weight: float) -> list[Tensor]:
    """``sum_r weight_r * tensors_r`` over ranks, one flat all-reduce per dtype and device.
    Returns the summed tensors (new tensors, shaped like the inputs)."""
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        groups[(tensor.dtype, tensor.device)].append(index)
    summed: list[Tensor] = [torch.empty(0)] * len(tensors)
    for indices in groups.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices]).mul_(weight)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for i, part in zip(indices, flat.split([tensors[i].numel() for i in indices])):
            summed[i] = part.view(tensors[i].shape)
    return summed


def average_gradients(module: nn.Module, weight: float) -> None:
    """Replace every parameter's ``.grad`` by ``sum_r weight_r * grad_r`` over the ranks.

    ``weight`` is this rank's share of the meta-batch (``len(rank_slice) / meta_batch_size``):
    the gradients of slice means then add up to the gradient of the whole meta-batch's mean.
    A missing gradient counts as zeros, so every rank contributes the same flat layout; a
    parameter whose gradient is missing on every rank keeps ``grad = None`` (optimizers skip it,
    as in a single process). Does nothing without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    parameters = list(module.parameters())
    if not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    # 1 / weight per present gradient: the weighted sum then counts the ranks that have one
    # (in the gradients' dtype and device, so it travels in the same all-reduce).
    has_grad = torch.tensor([1.0 / weight if p.grad is not None else 0.0 for p in parameters],
                            dtype=grads[0].dtype, device=grads[0].device)
    *averaged, ranks_with_grad = _weighted_sum_over_ranks([*grads, has_grad], weight)
    for parameter, grad, count in zip(parameters, averaged, ranks_with_grad.tolist()):
        if count < 0.5:  # no rank has a gradient for it
            continue
        if parameter.grad is None:
            parameter.grad = grad.clone()
        else:
            parameter.grad.copy_(grad)


def average_buffer_updates(module: nn.Module, before: dict[str, Tensor], weight: float) -> None:
    """Set each floating-point buffer to ``before + sum_r weight_r * (buffer_r - before)``.

    ``before`` holds the buffers as they were before this step's forward pass (identical on every
    rank). Averaging the *updates* keeps buffers no rank changed bitwise as they were, and gives
    BatchNorm's running mean exactly the update of the whole meta-batch's mean. Integer buffers
    (``num_batches_tracked``) move alike on every rank and are left alone.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    named = [(name, buffer) for name, buffer in module.named_buffers() if buffer.is_floating_point()]
    if not named:
        return
    updates = _weighted_sum_over_ranks([buffer - before[name] for name, buffer in named], weight)
    with torch.no_grad():
        for (name, buffer), update in zip(named, updates):
            buffer.copy_(before[name] + update)


def average_scalars(values: list[float], weight: float) -> list[float]:
    """``sum_r weight_r * values_r`` for each value (e.g. the logged loss and metric)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    (summed,) = _weighted_sum_over_ranks([torch.tensor(values, dtype=torch.float64)], weight)
    return summed.tolist()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank (the same answer on every rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    count = torch.tensor([float(flag)], dtype=torch.float64)
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return bool(count.item() > 0)


def wait_for_all_ranks() -> None:
    """A barrier: returns once every rank has called it (a one-number all-reduce on the CPU,
    so it passes through gloo whatever the GPU backend)."""
    any_rank(False)


def broadcast_scalars(values: list[float], source: int = 0) -> list[float]:
    """Rank ``source``'s ``values`` on every rank (the others pass placeholders of the same length)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(tensor, src=source)
    return tensor.tolist()


def check_replicas_agree(module: nn.Module, step: int, run_dir: object) -> None:
    """Stop with a clear message unless every rank holds the same step and weights (a
    fingerprint of them); this also synchronizes the ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        fingerprint = sum((float(p.detach().double().sum()) * (index + 1)
                           for index, p in enumerate(module.parameters())), 0.0)
    mine = torch.tensor([float(step), fingerprint], dtype=torch.float64)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    states = [tuple(state.tolist()) for state in everyone]
    if len(set(states)) > 1:
        steps = ", ".join(f"rank {rank}: step {int(state[0])}" for rank, state in enumerate(states))
        raise InnerloopError(
            f"the ranks start from different states ({steps}; or different weights): every rank "
            f"must read the same {run_dir}, so put the run directory on a filesystem that all "
            f"ranks share (--run-dir).")
