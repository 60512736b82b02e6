"""The benchmark suite's references compute what innerloop computes, and ``innerloop bench``
reaches the suite. (The suite's timings are measurements, not tests; its float64 gradient
check at full size runs in every suite run.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from innerloop.algorithms import ANIL, MAML, ProtoNet
from innerloop.nn import Conv4

from test_functional import WAYS, make_episodes

sys.path.insert(0, str(REPO))
from benchmarks import references as ref  # noqa: E402


def learner_and_standard(cls, **options):
    torch.manual_seed(0)
    learner = cls(Conv4(in_channels=1, hidden_channels=3, image_size=16, batch_norm="task"), WAYS,
                  inner_lr=0.3, **options).double()
    standard = ref.standard_conv4(WAYS, hidden_channels=3, image_size=16).double()
    ref.copy_weights(learner, standard)
    return learner, standard


def our_gradient(learner, episodes):
    learner.zero_grad(set_to_none=True)
    learner.meta_loss(episodes)[0].backward()
    return ref.gradients(learner)


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order, reference", [("second", "plain loop"), ("first", "plain loop"),
                                              ("second", "higher"), ("first", "higher"), ("second", "torchopt")])
def test_maml_references_give_innerloops_meta_gradient(order, reference):
    learner, standard = learner_and_standard(MAML, inner_steps=2, order=order, backward_per_task=True,
                                             task_workers=2)
    episodes = make_episodes()
    if reference == "plain loop":
        step = ref.plain_maml_loop(standard, episodes, 0.3, 2, order)
    elif reference == "higher":
        step = ref.higher_maml(standard, episodes, 0.3, 2, order)
    else:
        step = ref.torchopt_maml(standard, episodes, 0.3, 2)
    step()
    assert_same(our_gradient(learner, episodes), ref.gradients(standard))


def test_anil_and_protonet_plain_loops_give_innerloops_gradient():
    learner, standard = learner_and_standard(ANIL, inner_steps=2)
    episodes = make_episodes()
    ref.plain_anil_loop(standard, episodes, 0.3, 2)()
    assert_same(our_gradient(learner, episodes), ref.gradients(standard))

    torch.manual_seed(0)
    protonet = ProtoNet(Conv4(in_channels=1, hidden_channels=3, image_size=16)).double().eval()
    embedding = ref.standard_conv4(WAYS, hidden_channels=3, image_size=16, running_statistics=True)[:-1]
    embedding = embedding.double().eval()  # running statistics: per task and batched agree
    ref.copy_weights(protonet, embedding)
    ref.plain_protonet_loop(embedding, episodes)()
    assert_same(our_gradient(protonet, episodes), ref.gradients(embedding))


def test_innerloop_bench_runs_the_suite(tmp_path):
    report = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, "-m", "innerloop", "bench", "--skip-head-to-head", "--skip-sampler",
                           "--methods", "protonet", "--rounds", "1", "--threads", "1", "--json", str(report)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(report.read_text())["methods"]
    assert row["method"] == "protonet" and row["train_tasks_per_s"] > 0 and row["peak_memory_mib"] > 0
    assert row["vs_plain_step"] > 0 and row["eval_episodes_per_s"] > 0
    assert "| protonet |" in report.with_suffix(".md").read_text()
