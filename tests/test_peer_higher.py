"""Cross-check with a published MAML implementation: ``higher`` (Grefenstette et al. 2019).

The same network, initialization and tasks give the same second-order and first-order MAML
meta-gradients in ``higher`` and in innerloop.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from innerloop.algorithms import MAML

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import higher

from test_functional import TASKS, WAYS, make_episodes, make_learner, meta_gradient


def higher_meta_gradient(learner: MAML, episodes, steps: int, first_order: bool) -> list[torch.Tensor]:
    network = learner.network
    inner_optimizer = torch.optim.SGD(network.parameters(), lr=learner.inner_lr)
    network.zero_grad(set_to_none=True)
    for t in range(TASKS):
        episode = episodes[t]
        with higher.innerloop_ctx(network, inner_optimizer, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                support_loss = torch.nn.functional.cross_entropy(fmodel(episode.support_x), episode.support_y)
                if first_order:
                    diffopt.step(support_loss, grad_callback=lambda grads: [g.detach() for g in grads])
                else:
                    diffopt.step(support_loss)
            query_loss = torch.nn.functional.cross_entropy(fmodel(episode.query_x), episode.query_y)
            (query_loss / TASKS).backward()
    return [p.grad.clone() for p in network.parameters()]


@pytest.mark.parametrize("order", ["second", "first"])
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_equals_highers(order, steps):
    learner = make_learner(MAML, "task", inner_steps=steps, order=order)
    episodes = make_episodes()
    ours = meta_gradient(learner, episodes)
    theirs = higher_meta_gradient(learner, episodes, steps, first_order=order == "first")
    assert len(ours) == len(theirs) and WAYS == learner.outputs
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
