"""MLTI task interpolation for meta-training (innerloop.tasks.task_mixup) and its Trainer option."""

from __future__ import annotations

import math

import pytest
import torch

from innerloop.config import config_from_dict
from innerloop.data.omniglot import omniglot_split
from innerloop.errors import ConfigError
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.tasks.task_mixup import draw_task_mixup, mix_tasks, task_mixup_seed
from innerloop.train import Trainer, step_seed


def labelled(support_x: torch.Tensor, query_x: torch.Tensor, ways: int = 2) -> Episodes:
    tasks, support, query = support_x.shape[0], support_x.shape[1], query_x.shape[1]
    return Episodes(support_x, torch.arange(ways).repeat_interleave(support // ways).expand(tasks, -1),
                    query_x, torch.arange(ways).repeat_interleave(query // ways).expand(tasks, -1),
                    ways, support // ways, query // ways, torch.arange(tasks * ways).view(tasks, ways))


def test_a_mixed_task_is_the_hand_computed_interpolation_of_the_two_tasks_class_by_class():
    # task 0: support images 1 and 2 (class 0, class 1), query 3 and 4; its partner 10, 20, 30, 40
    tasks = labelled(torch.tensor([[1.0, 2.0], [5.0, 6.0]]).view(2, 2, 1, 1, 1),
                     torch.tensor([[3.0, 4.0], [7.0, 8.0]]).view(2, 2, 1, 1, 1))
    partners = labelled(torch.tensor([[10.0, 20.0], [50.0, 60.0]]).view(2, 2, 1, 1, 1),
                        torch.tensor([[30.0, 40.0], [70.0, 80.0]]).view(2, 2, 1, 1, 1))
    mixed = mix_tasks(tasks, partners, torch.tensor([True, False]), torch.tensor([0.25, 1.0]))
    # 0.25 * own + 0.75 * partner, the same lambda for support and query; task 1 is not mixed
    assert mixed.support_x.flatten().tolist() == [7.75, 15.5, 5.0, 6.0]
    assert mixed.query_x.flatten().tolist() == [23.25, 31.0, 7.0, 8.0]
    assert torch.equal(mixed.support_y, tasks.support_y) and torch.equal(mixed.query_y, tasks.query_y)
    assert torch.equal(mixed.class_ids, tasks.class_ids)


@pytest.fixture(scope="module")
def splits(omniglot_store):
    return {name: omniglot_split(omniglot_store, name) for name in ("train", "val")}


def test_draws_are_seeded_leave_the_global_stream_alone_and_slice_like_the_meta_batch(splits):
    sampler = EpisodeSampler(splits["train"], 5, 1, 2)
    state = torch.get_rng_state()
    plan = draw_task_mixup(sampler, 8, 1.0, 0.5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert plan.mixed.all() and ((plan.lambdas > 0) & (plan.lambdas < 1)).all()
    again = draw_task_mixup(sampler, 8, 1.0, 0.5, seed=3)
    assert torch.equal(again.lambdas, plan.lambdas) and torch.equal(again.partners.rows, plan.partners.rows)
    assert not torch.equal(draw_task_mixup(sampler, 8, 1.0, 0.5, seed=4).lambdas, plan.lambdas)
    none = draw_task_mixup(sampler, 8, 0.0, 0.5, seed=3)
    assert not none.mixed.any() and (none.lambdas == 1).all()
    # a rank's share: mixing the whole meta-batch then slicing = slicing, then mixing
    tasks = sampler.sample(8, torch.Generator().manual_seed(0))
    whole = mix_tasks(tasks, sampler.gather(plan.partners), plan.mixed, plan.lambdas)
    share = plan.slice(3, 6)
    part = mix_tasks(tasks.slice(3, 6), sampler.gather(share.partners), share.mixed, share.lambdas)
    assert torch.equal(part.support_x, whole.support_x[3:6]) and torch.equal(part.query_x, whole.query_x[3:6])
    assert whole.support_x.min() >= 0 and whole.support_x.max() <= 1  # mixed images stay images
    # Beta(0.5, 0.5) is U-shaped: most lambdas near 0 or 1
    lambdas = draw_task_mixup(sampler, 2000, 1.0, 0.5, seed=5).lambdas
    assert abs(float(lambdas.mean()) - 0.5) < 0.03
    assert abs(float(((lambdas < 0.1) | (lambdas > 0.9)).float().mean()) - 2 * math.asin(math.sqrt(0.1)) * 2 / math.pi) < 0.04


def trainer_config(**train):
    return config_from_dict({"num_threads": 1, "model": {"hidden_channels": 8},
                             "train": {"steps": 3, "ways": 5, "shots": 1, "queries": 2, "meta_batch_size": 4,
                                       "val_every": 3, "val_episodes": 5, "log_every": 1, **train},
                             "eval": {"episodes": 5, "batch_size": 5}})


def captured_batches(trainer: Trainer) -> list[Episodes]:
    seen, original = [], trainer.learner.meta_loss

    def capture(episodes):
        seen.append(episodes)
        return original(episodes)

    trainer.learner.meta_loss = capture
    return seen


def test_probability_zero_trains_on_the_samplers_meta_batch_bit_for_bit(splits, tmp_path):
    trainer = Trainer(trainer_config(task_mixup=0.0), tmp_path / "plain", progress=False, splits=splits)
    seen = captured_batches(trainer)
    trainer.fit()
    for step, episodes in enumerate(seen):
        clean = trainer.sampler.sample(4, torch.Generator().manual_seed(step_seed(0, step)))
        assert torch.equal(episodes.support_x, clean.support_x) and torch.equal(episodes.query_x, clean.query_x)


def test_training_with_task_mixup_runs_mixes_training_tasks_and_is_reproducible(splits, tmp_path):
    weights = []
    for name in ("a", "b"):
        trainer = Trainer(trainer_config(task_mixup=1.0, task_mixup_alpha=2.0), tmp_path / name,
                          progress=False, splits=splits)
        seen = captured_batches(trainer)
        result = trainer.fit()
        assert result.steps == 3 and math.isfinite(result.best_val_score)
        weights.append([p.detach().clone() for p in trainer.learner.parameters()])
    for step, episodes in enumerate(seen):
        clean = trainer.sampler.sample(4, torch.Generator().manual_seed(step_seed(0, step)))
        plan = draw_task_mixup(trainer.sampler, 4, 1.0, 2.0, task_mixup_seed(0, step))
        expected = mix_tasks(clean, trainer.sampler.gather(plan.partners), plan.mixed, plan.lambdas)
        assert torch.equal(episodes.support_x, expected.support_x) and torch.equal(episodes.query_x, expected.query_x)
        assert not torch.equal(episodes.support_x, clean.support_x)
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_task_mixup_settings_are_validated():
    with pytest.raises(ConfigError, match="train.task_mixup .* must be in \\[0, 1\\]"):
        config_from_dict({"train": {"task_mixup": 1.5}})
    with pytest.raises(ConfigError, match="train.task_mixup_alpha must be > 0"):
        config_from_dict({"train": {"task_mixup_alpha": 0}})
    sinusoid = {"data": {"dataset": "sinusoid"}, "model": {"algorithm": "maml", "backbone": "mlp"},
                "train": {"ways": 1, "task_mixup": 0.5}, "eval": {"ways": 1}}
    with pytest.raises(ConfigError, match="train.task_mixup interpolates .* regression dataset"):
        config_from_dict(sinusoid)


class FirstUniformPlan:
    """A stand-in sampler whose plan is the first uniform its generator draws for each task."""

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(num_tasks, generator=generator, dtype=torch.float64)


def test_lambdas_do_not_depend_on_the_partner_draw():
    seeds = range(400)
    plans = [draw_task_mixup(FirstUniformPlan(), 1, 1.0, 0.5, seed) for seed in seeds]
    partner_uniforms = torch.tensor([float(plan.partners[0]) for plan in plans])
    lambdas = torch.tensor([float(plan.lambdas[0]) for plan in plans], dtype=torch.float64)
    correlation = torch.corrcoef(torch.stack([partner_uniforms, lambdas]))[0, 1]
    assert abs(float(correlation)) < 0.15  # one stream for both gave -0.56
    assert 0.4 < float(lambdas.mean()) < 0.6  # Beta(0.5, 0.5) has mean 1/2
