"""Learning a class stream online by plain SGD, one image (or small batch) at a time.

The stream learner shared by OML (only the prediction head is updated; the representation stays
frozen) and by naive fine-tuning (every weight is updated). At the start of a stream the learner
copies its network's parameters and replaces the output layer by a zero layer with one row per
stream class (:func:`~innerloop.online.network.with_zero_output`). Each arrival's training
images, in the order the stream shows them, are cut into batches of ``online_batch_size``; batch
``step`` gives one update of the parameters that pass ``updated``:

    stream_params[name] = stream_params[name] - online_lr * grad(cross_entropy(
        run(network, stream_params, batch_x[step]), batch_y[step]))[name]

over all ``num_classes`` outputs (class-incremental: the labels are stream labels). This is
:func:`innerloop.functional.inner_loop` with ``num_steps`` = number of batches and the step-th
loss on the step-th batch — an online learner is an inner loop whose steps follow the stream.
No image is seen twice and nothing is stored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.functional import SGD, Params, ParameterFilter, inner_loop, parameters_of, run
from innerloop.online.network import OnlineNetwork, with_zero_output
from innerloop.online.stream import Arrival, Probe


class OnlineSGDLearner(nn.Module):
    """A network whose parameters chosen by ``updated`` take one SGD step per stream batch."""

    name = "online-sgd"

    def __init__(self, network: OnlineNetwork, online_lr: float, updated: ParameterFilter,
                 online_batch_size: int = 1) -> None:
        super().__init__()
        if online_lr <= 0 or online_batch_size < 1:
            raise ValueError(f"online_lr must be > 0 and online_batch_size >= 1, got {online_lr} "
                             f"and {online_batch_size}")
        self.network = network
        self.online_lr = online_lr
        self.updated = updated
        self.online_batch_size = online_batch_size
        self.stream_params: Params | None = None

    def start_stream(self, num_classes: int, seed: int) -> None:
        params = {name: tensor.detach().clone() for name, tensor in parameters_of(self.network).items()}
        self.stream_params = with_zero_output(params, num_classes)

    def _require_stream(self) -> Params:
        if self.stream_params is None:
            raise RuntimeError(f"{self.name}: call start_stream(num_classes, seed) before learning a stream")
        return self.stream_params

    def _predictor(self, params: Params, classes: Tensor):
        return lambda images: run(self.network, params, images)[:, classes]

    def learn(self, arrival: Arrival, probe: Probe | None = None) -> None:
        params = self._require_stream()
        size = self.online_batch_size
        num_steps = math.ceil(arrival.train_y.numel() / size)

        def loss_fn(current: Params, step: int) -> Tensor:
            batch = slice(step * size, (step + 1) * size)
            return F.cross_entropy(run(self.network, current, arrival.train_x[batch]), arrival.train_y[batch])

        on_step = None
        if probe is not None:
            probe(self._predictor(params, arrival.classes))
            on_step = lambda _, current: probe(self._predictor(current, arrival.classes))  # noqa: E731
        adapted = [name for name in params if self.updated(name)]
        with torch.no_grad():  # plain SGD: nothing differentiates through the stream
            self.stream_params = inner_loop(loss_fn, params, adapted, SGD(self.online_lr), num_steps,
                                            order="first", on_step=on_step)

    def logits(self, images: Tensor, classes: Tensor) -> Tensor:
        return run(self.network, self._require_stream(), images)[:, classes]
