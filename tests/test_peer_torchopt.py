"""Cross-check with a second published MAML implementation: TorchOpt (Ren et al., JMLR 2023).

The same network, initialization and tasks give the same second-order MAML meta-gradient with
TorchOpt's differentiable ``MetaSGD`` (state extracted before and recovered after each task, as
its MAML example does) and with innerloop.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchopt

from innerloop.algorithms import MAML

from test_functional import TASKS, make_episodes, make_learner, meta_gradient


def torchopt_meta_gradient(learner: MAML, episodes, steps: int) -> list[torch.Tensor]:
    network = learner.network
    network.zero_grad(set_to_none=True)
    optimizer = torchopt.MetaSGD(network, lr=learner.inner_lr)
    for t in range(TASKS):
        episode = episodes[t]
        state = torchopt.extract_state_dict(network)
        for _ in range(steps):
            optimizer.step(F.cross_entropy(network(episode.support_x), episode.support_y))
        (F.cross_entropy(network(episode.query_x), episode.query_y) / TASKS).backward()
        torchopt.recover_state_dict(network, state)
    return [p.grad.clone() for p in network.parameters()]


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_equals_torchopts(steps):
    learner = make_learner(MAML, "task", inner_steps=steps)
    episodes = make_episodes()
    ours = meta_gradient(learner, episodes)
    theirs = torchopt_meta_gradient(learner, episodes, steps)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
