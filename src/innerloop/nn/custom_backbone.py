"""Your own ``nn.Module`` as the backbone of a meta-learner.

Any module that maps a batch of inputs to one embedding per example, ``[B, ...] → [B, D]``,
serves every method that takes a backbone, except those that reach into a backbone's structure
(:data:`STRUCTURED_BACKBONES`) and those that have no backbone (:data:`NO_BACKBONE`).
:func:`prepare_backbone` gets it ready, in place:

* ``embedding_dim`` (the ``D`` that heads and attention modules are sized by) is checked by one
  forward pass of a zero support batch, in evaluation mode and without gradients (so BatchNorm
  statistics do not move and the global random stream is not used), and set when the module has
  no such attribute; an output that is not ``[B, D]`` is an error that says so.
* for methods that run the backbone through ``torch.func`` with per-task batch statistics
  (``backbone_batch_norm = "task"``: MAML, ANIL, BOIL, Meta-SGD, MAML++, CAVIA, iMAML, Reptile,
  the learned optimizers, Bayesian MAML, PLATIPUS) every ``nn.BatchNorm1d/2d/3d`` inside the
  module is replaced by a :class:`~innerloop.nn.task_batch_norm.TaskBatchNorm` that keeps the
  same ``weight`` and ``bias`` parameters and no running statistics: running statistics cannot be
  kept per task (DESIGN.md, "BatchNorm"), and the learner then normalizes as it does Conv-4's
  (transductive by default, ``inner.transductive``). Other layers (Linear, Conv2d, LayerNorm,
  GroupNorm, ...) are used as they are: ``functional_call`` swaps the parameters in and the
  module's buffers stay its own.

Methods trained by ordinary backpropagation keep the module's BatchNorm as it is (batch
statistics in training, running statistics in evaluation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innerloop.errors import InnerloopError
from innerloop.nn.task_batch_norm import TaskBatchNorm

# method name → (attributes the backbone needs, why)
STRUCTURED_BACKBONES: dict[str, tuple[tuple[str, ...], str]] = {
    "tadam": (("blocks",), "TADAM FiLM-conditions each convolutional block, so it needs .blocks, a "
                           "sequence of (conv, norm, activation, pool) blocks, as innerloop.nn.Conv4 has"),
    "relation": (("feature_maps", "out_channels", "feature_side"),
                 "Relation Networks compare unpooled feature maps, so they need feature_maps(x) → "
                 "[B, C, H, W], out_channels (C) and feature_side (H = W), as innerloop.nn.Conv4 has"),
}
NO_BACKBONE: dict[str, str] = {
    name: "has its own encoder and decoder and takes no backbone" for name in ("cnp", "np", "anp")}


def methods_without_custom_backbones() -> str:
    """The methods that cannot take an arbitrary module, and why, as one sentence per method."""
    reasons = {name: why for name, (_, why) in STRUCTURED_BACKBONES.items()}
    reasons |= {name: f"{name} {why}" for name, why in NO_BACKBONE.items()}
    return " ".join(f"{name}: {why}." for name, why in reasons.items())


def needs_module(*args: Any, **kwargs: Any) -> nn.Module:
    """``model.backbone: custom`` — the module comes from Python, not from the config."""
    raise InnerloopError("model.backbone: custom is your own nn.Module, which a config cannot build: pass "
                         "it in Python, e.g. Trainer(config, run_dir, backbone=module), "
                         "build_learner(config, backbone=module) or evaluate_run(run_dir, backbone=module)")


def to_task_batch_norm(module: nn.Module) -> list[str]:
    """Replace every ``nn.BatchNorm1d/2d/3d`` inside ``module`` by a :class:`TaskBatchNorm` with
    the same ``weight``, ``bias`` (the parameter objects themselves; none without ``affine``) and
    ``eps``; returns the qualified names of the replaced modules."""
    replaced = []
    for parent_name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                task = TaskBatchNorm(child.num_features, child.eps)
                task.weight = child.weight if child.affine else None
                task.bias = child.bias if child.affine else None
                setattr(parent, child_name, task)
                replaced.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return replaced


@torch.no_grad()
def embedding_dim_of(module: nn.Module, example_input: Tensor) -> int:
    """``D`` of ``module(example_input) → [B, D]``, from one forward pass in evaluation mode
    (every submodule's training flag restored afterwards)."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    parameter = next(module.parameters(), None)
    if parameter is not None:
        example_input = example_input.to(parameter.device)
    module.eval()
    try:
        output = module(example_input)
    except Exception as error:
        raise InnerloopError(f"your backbone failed on a support batch of shape {list(example_input.shape)} "
                             f"({type(error).__name__}: {error}); it must take inputs of this shape") from error
    finally:
        for submodule, training in modes:
            submodule.training = training
    batch = example_input.shape[0]
    if not isinstance(output, Tensor):
        raise InnerloopError(f"your backbone returned a {type(output).__name__}; it must return one tensor "
                             f"of embeddings, [B, D]")
    if output.dim() != 2 or output.shape[0] != batch:
        raise InnerloopError(f"your backbone maps a batch of shape {list(example_input.shape)} to "
                             f"{list(output.shape)}; it must return one embedding per example, [B, D] = "
                             f"[{batch}, D] (flatten or pool its output, e.g. end it with nn.Flatten())")
    return int(output.shape[1])


def prepare_backbone(module: nn.Module, method: str, batch_norm: str, example_input: Tensor) -> nn.Module:
    """``module`` made ready to be the backbone of ``method`` (its registry name), whose backbone
    BatchNorm kind is ``batch_norm`` (``"task"`` or ``"running"``): see the module docstring.
    ``example_input`` is a support batch ``[B, ...]`` of the task's input shape."""
    if not isinstance(module, nn.Module):
        raise InnerloopError(f"a backbone must be an nn.Module (or a function that returns one), got "
                             f"{type(module).__name__}")
    if method in NO_BACKBONE:
        raise InnerloopError(f"{method} {NO_BACKBONE[method]}; do not pass a backbone. "
                             f"{methods_without_custom_backbones()}")
    if method in STRUCTURED_BACKBONES:
        attributes, why = STRUCTURED_BACKBONES[method]
        missing = [name for name in attributes if not hasattr(module, name)]
        if missing:
            raise InnerloopError(f"{method} cannot take an arbitrary nn.Module (yours lacks "
                                 f"{', '.join(missing)}). Methods that cannot: "
                                 f"{methods_without_custom_backbones()} Every other method takes any "
                                 f"module that returns [B, D] embeddings.")
    dim = embedding_dim_of(module, example_input)
    declared = getattr(module, "embedding_dim", None)
    if declared is None:
        module.embedding_dim = dim
    elif declared != dim:
        raise InnerloopError(f"your backbone's embedding_dim is {declared}, but it returns {dim} features "
                             f"per example; fix the attribute or remove it")
    if batch_norm == "task":
        to_task_batch_norm(module)
    return module
