"""Parameters as ``dict[str, Tensor]`` and the filters that say which of them adapt.

A model's parameters are taken once with :func:`parameters_of` and passed explicitly to
:func:`run` (``torch.func.functional_call``); module internals are never mutated to swap
weights. Which parameters the inner loop adapts is a filter over these names: adapting the whole
network (MAML), only the head (ANIL) or only the body (BOIL) is the same code with a different
filter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
ParameterFilter = Callable[[str], bool]

HEAD_PREFIX = "head."
BODY_PREFIX = "body."

PARAMETER_FILTERS: dict[str, ParameterFilter] = {
    "all": lambda name: True,
    "head": lambda name: name.startswith(HEAD_PREFIX),
    "body": lambda name: name.startswith(BODY_PREFIX),
}


def parameters_of(module: nn.Module) -> Params:
    """The module's parameters by qualified name (the tensors themselves, not copies)."""
    return dict(module.named_parameters())


def parameter_filter(name: str) -> ParameterFilter:
    """The named filter (``all``, ``head`` or ``body``)."""
    if name not in PARAMETER_FILTERS:
        raise ValueError(f"unknown parameter filter '{name}'; choose one of {', '.join(PARAMETER_FILTERS)}")
    return PARAMETER_FILTERS[name]


def run(module: nn.Module, params: Mapping[str, Tensor], *inputs: Any) -> Any:
    """``module(*inputs)`` computed with ``params`` in place of the module's own parameters."""
    return functional_call(module, dict(params), inputs)
