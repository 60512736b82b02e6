"""Robustness evaluation: support label noise, adversarial support sets, class imbalance, the
report and the command; and learners that handle any support labels in any order."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from innerloop.algorithms import ALGORITHMS
from innerloop.algorithms.metric.protonet import class_means
from innerloop.algorithms.optimization.gradient_learner import round_robin_by_label
from innerloop.build import build_learner
from innerloop.cli import main
from innerloop.config import config_from_dict
from innerloop.data.omniglot import omniglot_split
from innerloop.errors import InnerloopError, TaskError
from innerloop.evaluate.robustness import (AdversarialSupport, RobustnessReport, SupportImbalance,
                                           SupportLabelNoise, adversarial_support_x, derived_seed,
                                           evaluate_robustness, noisy_support_labels, query_nll)
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.train import Trainer


def tiny_learner(algorithm: str = "protonet", ways: int = 5, shots: int = 2, **inner):
    torch.manual_seed(0)
    config = config_from_dict({"num_threads": 1, "model": {"algorithm": algorithm, "hidden_channels": 8},
                               "train": {"ways": ways, "shots": shots, "queries": 2, "steps": 100},
                               "inner": {"first_order_steps": 10, "multi_step_loss_steps": 10, **inner}})
    return build_learner(config).eval()


@pytest.fixture(scope="module")
def test_split(omniglot_store):
    return omniglot_split(omniglot_store, "test")


def omniglot_episodes(split, ways=5, shots=5, queries=3, count=6, seed=0) -> Episodes:
    return next(FixedEpisodes(EpisodeSampler(split, ways, shots, queries), count, seed).batches(count))


def sorted_labels(ways: int, shots: int) -> torch.Tensor:
    return torch.arange(ways).repeat_interleave(shots)


# -- label noise -----------------------------------------------------------------------------
def test_label_noise_replaces_exactly_round_rate_times_support_size_labels_by_other_classes():
    clean = sorted_labels(5, 5)
    changed_to = torch.zeros(5, 5)
    nested = 0
    for episode in range(200):
        noisy = {rate: noisy_support_labels(clean, 5, rate, torch.Generator().manual_seed(derived_seed(0, "label_noise", episode)))
                 for rate in (0.2, 0.3, 0.4)}
        for rate, expected in ((0.2, 5), (0.3, 8), (0.4, 10)):  # round(7.5) = 8: halves round up
            assert int((noisy[rate] != clean).sum()) == expected
            assert torch.bincount(noisy[rate], minlength=5).min() >= 1  # every class keeps an example
        flipped = noisy[0.4] != clean
        for old, new in zip(clean[flipped].tolist(), noisy[0.4][flipped].tolist()):
            changed_to[old, new] += 1
        nested += bool(((noisy[0.2] != clean) <= flipped).all() and torch.equal(noisy[0.2][noisy[0.2] != clean],
                                                                                noisy[0.4][noisy[0.2] != clean]))
    assert changed_to.diagonal().sum() == 0  # a noisy label is always another class
    off_diagonal = changed_to[~torch.eye(5, dtype=torch.bool)].view(5, 4)
    shares = off_diagonal / off_diagonal.sum(1, keepdim=True)  # 2000 flips: ~100 per (old, new) pair
    assert shares.min() > 0.15 and shares.max() < 0.35  # uniform over the 4 other classes: 0.25
    assert nested >= 190  # the 20% corruption is part of the 40% one unless a redraw was needed


def test_one_shot_label_noise_swaps_classes_and_refuses_a_single_noisy_label():
    clean = sorted_labels(5, 1)
    for episode in range(20):
        noisy = noisy_support_labels(clean, 5, 0.4, torch.Generator().manual_seed(episode))
        assert int((noisy != clean).sum()) == 2 and torch.equal(noisy.sort().values, clean)
    with pytest.raises(TaskError, match="at least 2 labels"):
        noisy_support_labels(clean, 5, 0.2, torch.Generator().manual_seed(0))


def test_label_noise_is_seeded_per_episode_and_leaves_images_and_queries_alone(test_split):
    batch = omniglot_episodes(test_split)
    noise = SupportLabelNoise(0.4)
    learner = tiny_learner()
    noisy = noise.perturb(learner, batch, first_episode=0, seed=0)
    assert torch.equal(noisy.support_y, noise.perturb(learner, batch, 0, 0).support_y)
    assert not torch.equal(noisy.support_y, noise.perturb(learner, batch, 0, 1).support_y)
    later = noise.perturb(learner, batch.slice(2, 6), first_episode=2, seed=0)  # another batch size
    assert torch.equal(later.support_y, noisy.support_y[2:])
    assert ((noisy.support_y != batch.support_y).sum(1) == 10).all()
    for name in ("support_x", "query_x", "query_y", "class_ids"):
        assert torch.equal(getattr(noisy, name), getattr(batch, name))


# -- class imbalance -------------------------------------------------------------------------
def test_imbalance_keeps_minority_shots_in_the_stated_number_of_classes(test_split):
    batch = omniglot_episodes(test_split)
    imbalance = SupportImbalance(0.4, minority_shots=1)
    shrunk = imbalance.perturb(tiny_learner(), batch, 0, seed=0)
    assert shrunk.support_x.shape[:2] == (6, 2 * 1 + 3 * 5) and shrunk.shots == 5
    minority_sets = set()
    for t in range(6):
        counts = torch.bincount(shrunk.support_y[t], minlength=5)
        assert sorted(counts.tolist()) == [1, 1, 5, 5, 5]
        assert torch.equal(shrunk.support_y[t], shrunk.support_y[t].sort().values)  # still by label
        minority_sets.add(tuple((counts == 1).nonzero().flatten().tolist()))
        for label in range(5):  # each class keeps its first examples
            kept = shrunk.support_x[t][shrunk.support_y[t] == label]
            assert torch.equal(kept, batch.support_x[t, 5 * label: 5 * label + len(kept)])
    assert len(minority_sets) > 1  # drawn per episode
    assert torch.equal(shrunk.query_x, batch.query_x) and torch.equal(shrunk.query_y, batch.query_y)
    assert imbalance.label(5, 5) == "2 of 5 classes with 1 support shot (others 5)"
    with pytest.raises(TaskError, match="more than 1 shots"):
        imbalance.check(5, 1)
    with pytest.raises(TaskError, match="between 1 and 4"):
        SupportImbalance(0.05).check(5, 5)


# -- learners take any support labels ---------------------------------------------------------
@pytest.mark.parametrize("ways, shots", [(5, 1), (5, 5), (3, 4)])
def test_round_robin_inner_minibatches_are_the_old_order_on_sorted_balanced_support(ways, shots):
    old_order = torch.arange(ways * shots).view(ways, -1).t().flatten()  # the layout-based rule it replaces
    assert torch.equal(round_robin_by_label(sorted_labels(ways, shots), ways), old_order)


def test_round_robin_cycles_through_the_labels_of_noisy_shuffled_unequal_support():
    labels = torch.tensor([2, 0, 0, 1, 2, 2, 0, 0])
    order = round_robin_by_label(labels, 3)
    assert order.tolist() == [1, 3, 0, 2, 4, 6, 5, 7]
    assert labels[order].tolist() == [0, 1, 2, 0, 2, 0, 2, 0]


def test_maml_inner_minibatches_on_sorted_balanced_support_are_unchanged():
    learner = tiny_learner("maml", shots=4, batch_size=5)
    inputs, labels = torch.randn(20, 3), sorted_labels(5, 4)
    old_order = torch.arange(20).view(5, -1).t().flatten()
    for step in range(4):
        rows = old_order.roll(-(step * 5) % 20)[:5]
        x, y = learner._inner_batch(inputs, labels, step)
        assert torch.equal(x, inputs[rows]) and torch.equal(y, labels[rows])


def test_prototypes_are_class_means_whatever_the_support_order_and_counts():
    embeddings = torch.randn(15, 4)
    labels = sorted_labels(5, 3)
    assert torch.allclose(class_means(embeddings, labels, 5), embeddings.view(5, 3, 4).mean(1), atol=1e-6)
    order = torch.randperm(15, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(class_means(embeddings[order], labels[order], 5), embeddings.view(5, 3, 4).mean(1), atol=1e-6)
    unequal = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 1, 1, 3, 2])
    expected = torch.stack([embeddings[unequal == k].mean(0) for k in range(5)])
    assert torch.allclose(class_means(embeddings, unequal, 5), expected, atol=1e-6)


@pytest.mark.parametrize("algorithm", sorted(name for name, cls in ALGORITHMS.items()
                                             if "classification" in cls.task_kinds))
def test_every_classifier_adapts_to_noisy_and_imbalanced_support(algorithm, test_split):
    learner = tiny_learner(algorithm, shots=5)
    batch = omniglot_episodes(test_split, count=2)
    for perturbation in (SupportLabelNoise(0.4), SupportImbalance(0.4)):
        with torch.no_grad():
            scores = learner.episode_metric(perturbation.perturb(learner, batch, 0, seed=0))
        assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_a_support_order_does_not_change_protonet_or_maml_predictions_on_balanced_episodes(test_split):
    batch = omniglot_episodes(test_split, count=2)
    order = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    shuffled = dataclasses.replace(batch, support_x=batch.support_x[:, order], support_y=batch.support_y[:, order])
    for learner in (tiny_learner("protonet", shots=5), tiny_learner("maml", shots=5)):
        with torch.no_grad():
            assert torch.allclose(learner.query_logits(shuffled), learner.query_logits(batch), atol=1e-4)


# -- adversarial support sets ------------------------------------------------------------------
def check_attack(learner, batch, epsilon=0.05, steps=3):
    adversarial = adversarial_support_x(learner, batch, epsilon, steps, 2.5 * epsilon / steps, (0.0, 1.0))
    assert (adversarial - batch.support_x).abs().max() <= epsilon + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial != batch.support_x).any()
    with torch.no_grad():
        clean_loss = query_nll(learner, batch)
        attacked_loss = query_nll(learner, dataclasses.replace(batch, support_x=adversarial))
    assert (attacked_loss > clean_loss).all(), (clean_loss, attacked_loss)
    assert all(p.grad is None for p in learner.parameters())  # only the inputs were differentiated


def test_pgd_raises_protonet_query_loss_within_the_budget_and_the_image_range(test_split):
    check_attack(tiny_learner("protonet", shots=2), omniglot_episodes(test_split, shots=2, count=4))


def test_pgd_differentiates_through_the_inner_loop_of_maml_trained_first_order(test_split):
    learner = tiny_learner("maml", shots=2, order="first")
    batch = omniglot_episodes(test_split, shots=2, count=4)
    support_x = batch.support_x.clone().requires_grad_(True)
    with torch.enable_grad():  # first order: the adapted weights are constants of the support set
        (gradient,) = torch.autograd.grad(query_nll(learner, dataclasses.replace(batch, support_x=support_x)).sum(),
                                          support_x, allow_unused=True)
    assert gradient is None
    check_attack(learner, batch)
    assert learner.order == "first"  # restored after the attack


def test_attacking_tasks_one_at_a_time_gives_the_same_support_sets(test_split):
    batch = omniglot_episodes(test_split, shots=2, count=3)
    for learner in (tiny_learner("maml", shots=2), tiny_learner("protonet", shots=2)):
        together = adversarial_support_x(learner, batch, 0.1, 2, 0.05, (0.0, 1.0))
        one_by_one = adversarial_support_x(learner, batch, 0.1, 2, 0.05, (0.0, 1.0), tasks_per_pass=1)
        assert torch.equal(together, one_by_one)


def test_methods_whose_adaptation_detaches_the_support_set_are_refused_by_name(test_split):
    batch = omniglot_episodes(test_split, shots=2, count=2)
    for algorithm, says in (("imaml", "detached weights"), ("metalstm", "no gradient")):
        with pytest.raises(InnerloopError, match=f"^{algorithm}'s adaptation is not differentiable.*{says}"):
            AdversarialSupport(0.1, steps=1).perturb(tiny_learner(algorithm, shots=2), batch, 0, seed=0)


# -- the report and the command ----------------------------------------------------------------
def test_robustness_report_has_the_documented_json_schema(test_split, tmp_path):
    episodes = FixedEpisodes(EpisodeSampler(test_split, 5, 2, 3), 4, seed=0)
    conditions = evaluate_robustness(tiny_learner(shots=2), episodes,
                                     [SupportLabelNoise(0.2), AdversarialSupport(0.1, 2), SupportImbalance(0.4)],
                                     batch_size=2)
    report = RobustnessReport(method="protonet", dataset="omniglot", split="test", ways=5, shots=2, queries=3,
                              episodes=4, seed=0, checkpoint="best.pt", step=7, metric="accuracy",
                              date="2026-01-02", conditions=conditions)
    json_path, markdown_path = report.save(tmp_path)
    assert json_path.name == "robustness-test-5w2s3q-best-4ep-seed0.json"
    saved = json.loads(json_path.read_text())
    assert list(saved) == ["kind", "method", "dataset", "split", "ways", "shots", "queries", "episodes",
                           "seed", "checkpoint", "step", "metric", "date", "conditions"]
    assert saved["kind"] == "robustness" and saved["checkpoint"] == "best.pt" and saved["step"] == 7
    assert [c["condition"] for c in saved["conditions"]] == ["clean", "label_noise", "adversarial", "imbalance"]
    for condition in saved["conditions"]:
        assert list(condition) == ["condition", "label", "settings", "mean", "ci95"]
        assert 0 <= condition["mean"] <= 1 and condition["ci95"] >= 0
    assert saved["conditions"][0]["settings"] == {} and saved["conditions"][1]["settings"] == {"rate": 0.2}
    assert saved["conditions"][2]["settings"] == {"epsilon": 0.1, "steps": 2, "step_size": 0.125}
    assert saved["conditions"][3]["settings"] == {"minority_fraction": 0.4, "minority_shots": 1}
    assert "20% support label noise" in markdown_path.read_text()


def test_robustness_command_on_a_tiny_run(omniglot_root, omniglot_store, tmp_path, capsys):
    config = config_from_dict({"num_threads": 1, "model": {"hidden_channels": 8},
                               "train": {"steps": 2, "ways": 5, "shots": 2, "queries": 2, "val_every": 2,
                                         "val_episodes": 4, "log_every": 1},
                               "eval": {"shots": 2, "queries": 3, "episodes": 4, "batch_size": 4}})
    splits = {name: omniglot_split(omniglot_store, name) for name in ("train", "val")}
    run_dir = tmp_path / "run"
    Trainer(config, run_dir, progress=False, splits=splits).fit()
    code = main(["robustness", str(run_dir), "--episodes", "6", "--label-noise", "0.2", "--epsilon", "0.05",
                 "--pgd-steps", "1", "--imbalance", "0.4", "--set", "num_threads=1", "--data-root", str(omniglot_root)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| 2 of 5 classes with 1 support shot (others 2) |" in out
    saved = json.loads((run_dir / "robustness-test-5w2s3q-best-6ep-seed0.json").read_text())
    assert saved["method"] == "protonet" and saved["episodes"] == 6 and saved["step"] == 2
    assert [c["condition"] for c in saved["conditions"]] == ["clean", "label_noise", "adversarial", "imbalance"]
    code = main(["robustness", str(run_dir), "--set", "model.algorithm=maml", "--data-root", str(omniglot_root)])
    assert code == 2 and "fixed by the trained run" in capsys.readouterr().err


def test_halves_round_up_even_when_the_product_is_just_below_in_floating_point():
    from innerloop.evaluate.robustness import round_half_up

    assert 0.58 * 25 < 14.5 and round_half_up(0.58 * 25) == 15
    assert round_half_up(0.7 * 45) == 32 and round_half_up(0.2 * 25) == 5 and round_half_up(0.49) == 0
