"""Deep ensembles of any learner: member 0 is the single learner, predictions are mixtures."""

from __future__ import annotations

import torch

from innerloop.algorithms.ensemble import DeepEnsemble
from innerloop.algorithms.predictive import CategoricalPredictive
from innerloop.build import build_learner
from innerloop.config import config_from_dict
from innerloop.data import DATASETS
from innerloop.tasks.regression import SinusoidTasks


def regression_config(ensemble: int) -> dict:
    return {"data": {"dataset": "sinusoid"},
            "model": {"algorithm": "maml", "backbone": "mlp", "hidden_sizes": [8, 8], "ensemble": ensemble},
            "inner": {"lr": 0.01, "steps": 1},
            "train": {"ways": 1, "shots": 5, "queries": 5}, "eval": {"ways": 1, "shots": 5, "queries": 5}}


def test_member_zero_is_the_single_learner_and_members_differ():
    single = build_learner(config_from_dict(regression_config(1)))
    ensemble = build_learner(config_from_dict(regression_config(3)))
    assert isinstance(ensemble, DeepEnsemble) and ensemble.name == "maml-ensemble3"
    for name, tensor in single.state_dict().items():
        assert torch.equal(ensemble.members[0].state_dict()[name], tensor)
    first = ensemble.members[0].network.body.layers[0].weight
    assert not torch.equal(first, ensemble.members[1].network.body.layers[0].weight)


def test_ensemble_gradients_are_each_members_own():
    ensemble = build_learner(config_from_dict(regression_config(2)))
    tasks = SinusoidTasks(DATASETS["sinusoid"].split(None, "train"), shots=5, queries=5)
    episodes = tasks.sample(4, torch.Generator().manual_seed(0))
    loss, metrics = ensemble.meta_loss(episodes)
    loss.backward()
    alone = ensemble.members[1]
    expected = torch.autograd.grad(alone.meta_loss(episodes)[0], list(alone.parameters()))
    for parameter, gradient in zip(alone.parameters(), expected):
        assert torch.allclose(parameter.grad, gradient)
    member_mse = [float(m.meta_loss(episodes)[1]["mse"]) for m in ensemble.members]
    assert abs(metrics["mse"] - sum(member_mse) / 2) < 1e-6


def test_regression_ensemble_predicts_the_mixture_of_its_members():
    ensemble = build_learner(config_from_dict(regression_config(3))).eval()
    tasks = SinusoidTasks(DATASETS["sinusoid"].split(None, "test"), shots=5, queries=5)
    episodes = tasks.sample(2, torch.Generator().manual_seed(1))
    mixture = ensemble.predictive(episodes)
    assert mixture.means.shape == (2, 5, 3)
    members = [m.predictive(episodes) for m in ensemble.members]
    targets = episodes.query_y
    density = torch.stack([m.log_prob(targets).exp() for m in members]).mean(0)
    assert torch.allclose(mixture.log_prob(targets), density.log())
    expected_mse = (torch.stack([m.mean for m in members]).mean(0) - targets[..., 0]).square().mean(1)
    assert torch.allclose(ensemble.episode_metric(episodes), expected_mse.to(torch.float64))


def test_classification_ensemble_averages_member_probabilities():
    from innerloop.algorithms.metric.protonet import ProtoNet
    from innerloop.nn.conv4 import Conv4
    from innerloop.tasks.episodes import Episodes

    torch.manual_seed(0)
    members = [ProtoNet(Conv4(in_channels=1, hidden_channels=4, image_size=28)) for _ in range(2)]
    ensemble = DeepEnsemble(members).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 6, 1, 28, 28, generator=generator)
    labels = torch.arange(3).repeat_interleave(2).expand(2, -1)
    episodes = Episodes(images[:, ::2], labels[:, ::2], images[:, 1::2], labels[:, 1::2], 3, 1, 1,
                        torch.zeros(2, 3, dtype=torch.int64))
    with torch.no_grad():
        probs = ensemble.predictive(episodes).probs
        expected = torch.stack([CategoricalPredictive.from_logits(m.query_logits(episodes)).probs
                                for m in members]).mean(0)
        assert torch.allclose(probs, expected)
        accuracy = (expected.argmax(-1) == episodes.query_y).double().mean(1)
        assert torch.equal(ensemble.episode_metric(episodes), accuracy)


def test_member_zero_of_a_trained_ensemble_is_the_single_learner_trained_alone(tmp_path):
    from benchmarks.ensemble_member import extract_member
    from innerloop.evaluate.run import load_run
    from innerloop.train.trainer import Trainer

    def trained(ensemble: int, name: str):
        values = regression_config(ensemble)
        values["train"] |= {"steps": 12, "meta_batch_size": 4, "val_every": 6, "val_episodes": 8,
                            "checkpoint_every": 6, "log_every": 6}
        values["eval"] |= {"episodes": 8}
        Trainer(config_from_dict(values), tmp_path / name, progress=False).fit()
        return tmp_path / name

    ensemble_run = trained(3, "ensemble")
    extract_member(ensemble_run, 0, tmp_path / "member0")
    _, member, _, _ = load_run(tmp_path / "member0", "last")
    _, single, _, _ = load_run(trained(1, "single"), "last")
    for (name, tensor), other in zip(single.state_dict().items(), member.state_dict().values()):
        assert torch.allclose(tensor, other, atol=1e-6), name

    # an ensemble of gradient learners is scored after every requested inner-step count
    from innerloop.evaluate.run import evaluate_run

    report = evaluate_run(ensemble_run, "last", overrides=["eval.inner_steps=[0, 2]", "eval.episodes=8",
                                                            "num_threads=1"])
    assert [result.inner_steps for result in report.results] == [1, 0, 2]
    assert report.results[1].mean > report.results[0].mean  # no adaptation: larger error
    assert report.notes and report.notes[0].startswith("inner loop: sgd at lr 0.01")
