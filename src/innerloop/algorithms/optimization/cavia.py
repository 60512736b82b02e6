"""CAVIA — fast context adaptation (Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, ICML 2019).

The network's own weights are shared by all tasks and learned only in the outer loop; each task
adapts a small context vector, reset to zero for every task:

    context = 0
    repeat num_steps:  context = context - inner_lr * grad_context(support_loss)(params, context)

and the outer loop minimises ``mean_t query_loss(params, context_t)`` with respect to ``params``
(second order by default: through the context updates). The context conditions the network by
FiLM on the body's features, ``features * (1 + gamma) + beta`` with ``[gamma, beta] =
film(context)``, before the head. (The paper concatenates the context to the input for
regression and applies FiLM inside the convolutional layers for classification; one FiLM at the
embedding serves both here and keeps the backbone unchanged.)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from innerloop.algorithms.optimization.gradient_learner import AdaptedState, GradientLearner
from innerloop.functional import Params, inner_loop
from innerloop.functional.params import parameters_of, run

CONTEXT = "context"


class ContextNetwork(nn.Module):
    """``head(film_modulate(body(inputs), context))``."""

    def __init__(self, body: nn.Module, head: nn.Module, context_dim: int) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.film = nn.Linear(context_dim, 2 * body.embedding_dim)

    def forward(self, inputs: Tensor, context: Tensor) -> Tensor:
        features = self.body(inputs)
        gamma, beta = self.film(context).chunk(2, dim=-1)
        return self.head(features * (1 + gamma) + beta)


class CAVIA(GradientLearner):
    """CAVIA: only a per-task context vector adapts; the network is meta-learned."""

    name = "cavia"
    default_adapt = "all"  # unused: the context is what adapts
    inner_config_keys = ("context_dim",)

    def __init__(self, *args: Any, context_dim: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if context_dim < 1:
            raise ValueError(f"context_dim must be >= 1, got {context_dim}")
        body, head = self.network.body, self.network.head
        self.network = ContextNetwork(body, head, context_dim)
        self.context_dim = context_dim
        self.adapt_filter = "context"
        self.adapted_names = frozenset({CONTEXT})

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> AdaptedState:
        self._check_ways(ways)
        weights = parameters_of(self.network)
        start = {**weights, CONTEXT: support_x.new_zeros(self.context_dim)}

        def support_loss(params: Params, step: int) -> Tensor:
            x, y = self._inner_batch(support_x, support_y, step)
            network_params = {n: p for n, p in params.items() if n != CONTEXT}
            return self.loss(run(self.network, network_params, x, params[CONTEXT]), y)

        adapted = inner_loop(support_loss, start, {CONTEXT}, self.inner_optimizer(),
                             self.current_inner_steps, self.order, checkpoint=self.checkpoint)
        return AdaptedState(adapted, support_x)

    def predict(self, state: AdaptedState, query_x: Tensor) -> Tensor:
        network_params = {n: p for n, p in state.params.items() if n != CONTEXT}
        context = state.params[CONTEXT]
        if self.transductive or not self.has_batch_norm:
            return run(self.network, network_params, query_x, context)
        return self._grouped_predict(lambda x: run(self.network, network_params, x, context),
                                     state.support_x, query_x)
