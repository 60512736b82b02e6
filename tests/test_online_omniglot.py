"""The online learners end to end on real Omniglot: background training, evaluation-split streams,
summaries with intervals, and the benchmark's table and plot (tiny budgets)."""

from __future__ import annotations

import math
import sys

import torch

from conftest import REPO
from innerloop.data import load_split
from innerloop.data.omniglot import EXPECTED_CHARACTERS
from innerloop.online import (
    FTML,
    OML,
    ClassBatches,
    ClassStream,
    NaiveFineTuning,
    OnlineNetwork,
    evaluate_stream,
    summarize_records,
)
from innerloop.tasks.sampler import EpisodeSampler

sys.path.insert(0, str(REPO))
from benchmarks import online_omniglot_stream as bench  # noqa: E402


def small_network(outputs: int) -> OnlineNetwork:
    return OnlineNetwork(outputs, hidden_channels=4, hidden_size=8)


def test_evaluation_streams_hold_only_classes_outside_the_background_split(omniglot_root):
    background = load_split("omniglot", "background", omniglot_root, rotations=(0,))
    evaluation = load_split("omniglot", "evaluation", omniglot_root, rotations=(0,))
    assert background.num_classes == EXPECTED_CHARACTERS["images_background"] == 964
    stream = ClassStream(evaluation, 200, train_shots=5, test_shots=15, classes_per_arrival=5, seed=0)
    assert not set(stream.store_classes.tolist()) & set(background.base_classes.tolist())
    assert int(stream.store_classes.min()) >= 964  # evaluation characters have ids 965..1623
    assert stream.train_x.shape == (200 * 5, 1, 28, 28) and stream.test_x.shape == (200 * 15, 1, 28, 28)
    train, validation = bench.background_splits(str(omniglot_root))
    assert train.num_classes == 900 and validation.num_classes == 64
    assert not set(train.base_classes.tolist()) & set(validation.base_classes.tolist())


def test_tiny_end_to_end_run_of_all_three_learners(omniglot_root, tmp_path):
    torch.manual_seed(0)
    train, _ = bench.background_splits(str(omniglot_root))
    evaluation = load_split("omniglot", "evaluation", omniglot_root, rotations=(0,))
    generator = torch.Generator().manual_seed(0)
    batches = ClassBatches(train)

    ftml = FTML(small_network(5), num_inner_steps=1, eval_inner_steps=2, meta_batch_size=2,
                meta_steps_per_arrival=1, support_shots=2)
    episodes = EpisodeSampler(train, 5, 3, 2)
    for _ in range(2):
        ftml.meta_update(episodes.sample(2, generator))

    oml = OML(small_network(train.num_classes), online_lr=0.05)
    optimizer = torch.optim.Adam(oml.network.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        trajectory = batches.sample(1, 3, generator)
        assert trajectory[1].unique().numel() == 1  # one class's images
        loss, _ = oml.meta_loss(*trajectory, *batches.sample(5, 1, generator))
        loss.backward()
        optimizer.step()

    finetune = NaiveFineTuning(small_network(train.num_classes), online_lr=0.05)
    optimizer = torch.optim.Adam(finetune.network.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        finetune.supervised_loss(*batches.sample(16, 1, generator))[0].backward()
        optimizer.step()

    streams = [ClassStream(evaluation, 10, train_shots=3, test_shots=4, classes_per_arrival=5, seed=s) for s in (0, 1)]
    results = []
    for learner in (ftml, oml, finetune):
        records = [evaluate_stream(learner, stream) for stream in streams]
        summary = summarize_records(records)
        for view in ("all_seen", "within_task"):
            assert len(summary[view]["seen_curve"]) == 2
            mean, ci95 = summary[view]["final_seen_accuracy"]
            assert 0.0 <= mean <= 1.0 and ci95 >= 0.0
            assert not math.isnan(summary[view]["forgetting"][0])
        expected_updates = 2 if learner is ftml else 15  # FTML: inner steps; others: one per image
        assert len(summary["learning_speed"]["curve"]) == expected_updates + 1
        results.append({"key": learner.name, "training": {"wall_seconds": 1.0}, "update_unit": "updates",
                        "summary": summary})
    report = {"date": "2026-11-30", "wall_minutes": 0.1, "results": results,
              "settings": {"stream_classes": 10, "classes_per_arrival": 5, "train_shots": 3, "test_shots": 4,
                           "seeds": [0, 1]}}
    table = bench.markdown_table(report)
    assert table.count("\n| ") == 4 and "FTML" in table and "OML" in table and "Fine-tuning" in table
    bench.plot(report, tmp_path / "stream.png")
    assert (tmp_path / "stream.png").stat().st_size > 10_000
