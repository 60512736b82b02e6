"""Which ``torch.func`` transforms the caller runs under.

The per-task loop and the vmapped path run the same functions; two places choose a faster
implementation when no transform is active — batch norm (torch's fused kernel, see
:mod:`innerloop.nn.task_batch_norm`) and the inner loop's gradients (``torch.autograd.grad``,
which unlike ``torch.func.grad`` may run in several threads at once, see
:mod:`innerloop.functional.inner_loop`). Both read torch's functorch interpreter stack; if that
private interface is missing (a future torch), they answer True, which selects the
implementation that is correct everywhere.
"""

from __future__ import annotations

import torch


def _active_transforms() -> list[object] | None:
    try:
        return list(torch._C._functorch.get_interpreter_stack() or ())
    except AttributeError:
        return None


def inside_vmap() -> bool:
    """Whether the caller runs under ``torch.func.vmap`` (at any depth of nested transforms)."""
    stack = _active_transforms()
    if stack is None:
        return True
    vmap = torch._C._functorch.TransformType.Vmap
    return any(interpreter.key() == vmap for interpreter in stack)


def inside_transform() -> bool:
    """Whether any ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ...) is active."""
    stack = _active_transforms()
    return True if stack is None else bool(stack)
