"""The network every online learner here shares: a representation (``body``) and a prediction head.

``body`` is a backbone from :mod:`innerloop.nn` (Conv-4 without normalization, or an MLP on
flattened images); ``head`` is ``Linear(embedding, hidden_size) → ReLU → Linear(hidden_size,
num_outputs)``. In OML's terms (Javed & White 2019) ``body`` is the representation learning
network (RLN) and ``head`` the prediction learning network (PLN). Parameter names keep the
library's prefixes (``body.``, ``head.``), so :data:`innerloop.functional.PARAMETER_FILTERS`
select either part.

No batch normalization: the online learners take steps on one image at a time, where batch
statistics do not exist. The output layer (``head.2``) is the only part whose shape depends on
the label space; :func:`with_zero_output` replaces it by a zero layer of any width (a new task's
or a new stream's classes), which the functional core runs unchanged
(``torch.func.functional_call`` takes whatever tensors it is given).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innerloop.functional.params import Params, run
from innerloop.nn import MLP, Conv4

OUTPUT_WEIGHT = "head.2.weight"
OUTPUT_BIAS = "head.2.bias"
OUTPUT_NAMES = (OUTPUT_WEIGHT, OUTPUT_BIAS)
ONLINE_BACKBONES = ("conv4", "mlp")


class OnlineNetwork(nn.Module):
    """``images [B, C, H, W] → logits [B, num_outputs]`` through ``body`` then ``head``.

    Args:
        num_outputs: width of the output layer (the classes of the training label space).
        backbone: ``"conv4"`` (:class:`~innerloop.nn.Conv4`, ``hidden_channels`` channels, no
            normalization) or ``"mlp"`` (:class:`~innerloop.nn.MLP` of ``mlp_sizes`` on the
            flattened image).
        hidden_size: width of the head's hidden layer.
    """

    def __init__(self, num_outputs: int, backbone: str = "conv4", in_channels: int = 1,
                 image_size: int = 28, hidden_channels: int = 32, hidden_size: int = 64,
                 mlp_sizes: tuple[int, ...] = (128,)) -> None:
        super().__init__()
        if backbone == "conv4":
            body: nn.Module = Conv4(in_channels, hidden_channels, image_size, batch_norm="none")
            embedding = body.embedding_dim
        elif backbone == "mlp":
            mlp = MLP(in_channels * image_size * image_size, tuple(mlp_sizes))
            body, embedding = nn.Sequential(nn.Flatten(), mlp), mlp.embedding_dim
        else:
            raise ValueError(f"backbone must be one of {', '.join(ONLINE_BACKBONES)}, got '{backbone}'")
        if num_outputs < 1 or hidden_size < 1:
            raise ValueError(f"num_outputs and hidden_size must be >= 1, got {num_outputs} and {hidden_size}")
        self.body = body
        self.head = nn.Sequential(nn.Linear(embedding, hidden_size), nn.ReLU(),
                                  nn.Linear(hidden_size, num_outputs))
        self.hidden_size = hidden_size

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def part(params: Params, prefix: str) -> Params:
    """The entries of ``params`` under ``prefix`` (``"body."`` or ``"head."``), prefix removed,
    as :func:`~innerloop.functional.run` on that sub-module wants them."""
    return {name[len(prefix):]: tensor for name, tensor in params.items() if name.startswith(prefix)}


def head_logits(network: OnlineNetwork, params: Params, features: Tensor) -> Tensor:
    """``network.head`` with the ``head.*`` entries of ``params`` applied to body ``features``."""
    return run(network.head, part(params, "head."), features)


def with_zero_output(params: Params, num_outputs: int) -> Params:
    """``params`` with the output layer replaced by zeros of width ``num_outputs``: every class
    starts with the same score, so the label order of a new task or stream does not matter."""
    weight = params[OUTPUT_WEIGHT]
    return {**params,
            OUTPUT_WEIGHT: torch.zeros(num_outputs, weight.shape[1], dtype=weight.dtype, device=weight.device),
            OUTPUT_BIAS: torch.zeros(num_outputs, dtype=weight.dtype, device=weight.device)}
