"""The functional core: parameters as dicts, pure inner optimizers, the unrolled inner loop.

Every gradient-based meta-learner is written against these pieces (see ``../shared/DESIGN.md``):
models run through :func:`run` (``torch.func.functional_call``) with explicit parameter dicts,
inner optimizers are ``(init, update)`` pairs, and :func:`inner_loop` makes the one choice of how
meta-gradients flow (``"second"`` or ``"first"`` order); :func:`implicit_gradient` gives the
third, implicit differentiation of a proximal inner optimum by conjugate gradient (iMAML).
"""

from innerloop.functional.implicit import conjugate_gradient, implicit_gradient
from innerloop.functional.inner_loop import ORDERS, inner_loop
from innerloop.functional.inner_optimizers import (
    SGD,
    Adam,
    AdamState,
    InnerOptimizer,
    MomentumSGD,
    PerParameterSGD,
    StepwiseSGD,
)
from innerloop.functional.params import (
    PARAMETER_FILTERS,
    ParameterFilter,
    Params,
    parameter_filter,
    parameters_of,
    run,
)
from innerloop.nn.task_batch_norm import task_batch_norm

__all__ = ["ORDERS", "PARAMETER_FILTERS", "SGD", "Adam", "AdamState", "InnerOptimizer", "MomentumSGD",
           "ParameterFilter", "Params", "PerParameterSGD", "StepwiseSGD", "conjugate_gradient", "implicit_gradient",
           "inner_loop", "parameter_filter",
           "parameters_of", "run", "task_batch_norm"]
