"""Out-of-scope detection: the appended queries, the scores against hand-computed values, the
threshold choice, CLINC150's real out-of-scope pools, and the command on a small CLINC150 run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from innerloop.cli import main
from innerloop.errors import InnerloopError
from innerloop.evaluate import out_of_scope
from innerloop.evaluate.out_of_scope import (best_threshold, episode_auroc, finite_episodes,
                                             out_of_scope_pool, out_of_scope_queries, rejection_scores)
from innerloop.evaluate.run import evaluate_run
from innerloop.tasks.episodes import Episodes

RECIPE = str(Path(__file__).resolve().parents[1] / "configs" / "text" / "anil-banking77-5w1s.yaml")


def small_batch(tasks: int = 2, ways: int = 3, queries: int = 2, features: int = 4) -> Episodes:
    query_y = torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)
    return Episodes(torch.randn(tasks, ways, features), torch.arange(ways).repeat(tasks, 1),
                    torch.randn(tasks, ways * queries, features), query_y, ways, 1, queries,
                    torch.arange(ways).repeat(tasks, 1))


def test_out_of_scope_queries_follow_the_support_set_drawn_from_the_pool_without_repeats():
    batch, pool = small_batch(), torch.arange(40.0).view(10, 4)
    outside = out_of_scope_queries(batch, pool, 5, torch.Generator().manual_seed(0))
    assert outside.query_x.shape == (2, 5, 4) and torch.equal(outside.support_x, batch.support_x)
    assert torch.equal(outside.support_y, batch.support_y) and not outside.query_y.any()
    for task in range(2):
        rows = outside.query_x[task, :, 0] / 4  # row index in the pool
        assert len(set(rows.tolist())) == 5 and all(r.is_integer() and 0 <= r < 10 for r in rows.tolist())
    again = out_of_scope_queries(batch, pool, 5, torch.Generator().manual_seed(0))
    assert torch.equal(again.query_x, outside.query_x)
    with pytest.raises(InnerloopError, match=r"oos_queries must be in 1..10"):
        out_of_scope_queries(batch, pool, 11, torch.Generator())


def test_episodes_with_non_finite_confidences_are_left_out():
    confidence = torch.tensor([[0.9, 0.2], [float("nan"), 0.5], [0.8, 0.1]], dtype=torch.float64)
    correct = torch.tensor([[True, False], [True, False], [False, False]])
    is_oos = torch.tensor([[False, True]] * 3)
    (kept, kept_correct, kept_oos), dropped = finite_episodes(confidence, correct, is_oos)
    assert dropped == 1 and torch.equal(kept, confidence[[0, 2]]) and torch.equal(kept_correct, correct[[0, 2]])
    with pytest.raises(ValueError, match="non-finite"):
        best_threshold(confidence, correct, is_oos)


def test_scores_match_hand_counts():
    # one episode: 4 in-scope queries (3 right), 2 out-of-scope
    confidence = torch.tensor([[0.9, 0.8, 0.3, 0.7, 0.2, 0.75]], dtype=torch.float64)
    correct = torch.tensor([[True, True, True, False, False, False]])
    is_oos = torch.tensor([[False, False, False, False, True, True]])
    accuracy, recall = rejection_scores(confidence, correct, is_oos, threshold=0.5)
    assert accuracy.item() == pytest.approx(2 / 4)  # the 0.3 one is right but rejected
    assert recall.item() == pytest.approx(1 / 2)  # 0.2 rejected, 0.75 kept
    # AUROC: in-scope {0.9, 0.8, 0.3, 0.7} vs out {0.2, 0.75}: wins 2 + 2 + 1 + 1 = 6 of 8 pairs
    assert episode_auroc(confidence, is_oos).item() == pytest.approx(6 / 8)
    tie = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert episode_auroc(tie, torch.tensor([[False, True]])).item() == pytest.approx(0.5)


def test_threshold_maximises_the_balanced_score():
    confidence = torch.tensor([[0.9, 0.8, 0.6, 0.4, 0.3, 0.1]], dtype=torch.float64)
    correct = torch.tensor([[True, True, True, False, False, False]])
    is_oos = torch.tensor([[False, False, False, True, True, True]])
    threshold = best_threshold(confidence, correct, is_oos)
    assert 0.4 < threshold <= 0.6  # separates the two groups exactly
    accuracy, recall = rejection_scores(confidence, correct, is_oos, threshold)
    assert accuracy.item() == 1.0 and recall.item() == 1.0


def test_real_out_of_scope_pools_have_the_published_sizes(intent_data_root, monkeypatch):
    monkeypatch.setenv("INNERLOOP_DATA", str(intent_data_root))
    validation, test = out_of_scope_pool("val"), out_of_scope_pool("test")
    assert validation.shape == (200, 384) and test.shape == (1000, 384)  # oos_train + oos_val; oos_test
    assert torch.allclose(test.norm(dim=1), torch.ones(1000), atol=1e-4)  # unit-length MiniLM embeddings


def test_command_on_a_small_clinc150_run_and_refusal_elsewhere(tmp_path, intent_data_root, monkeypatch, capsys):
    monkeypatch.setenv("INNERLOOP_DATA", str(intent_data_root))
    settings = ["data.dataset=clinc150", "num_threads=1", "train.steps=20", "train.val_every=20",
                "train.val_episodes=30", "train.log_every=10", "eval.episodes=40"]
    run_dir = tmp_path / "clinc"
    assert main(["train", RECIPE, "--run-dir", str(run_dir), "--quiet", "--no-eval",
                 *[p for s in settings for p in ("--set", s)]]) == 0
    assert main(["out-of-scope", str(run_dir), "--oos-queries", "10"]) == 0
    report = json.loads((run_dir / "out-of-scope-test-5w1s15q10oos-best-40ep-seed0.json").read_text())
    scores = report["scores"]
    assert set(scores) == {"in_scope_accuracy", "out_of_scope_recall", "accuracy_without_rejection", "auroc"}
    # the in-scope queries are scored exactly as innerloop eval scores them, on the same episodes
    assert scores["accuracy_without_rejection"][0] == pytest.approx(evaluate_run(run_dir).mean, abs=1e-12)
    assert 0.5 < scores["auroc"][0] <= 1  # confidence separates in- from out-of-scope better than chance
    assert 0 < report["threshold"] < 1
    assert "out of scope recall" in capsys.readouterr().out

    other = tmp_path / "banking"
    settings[0] = "data.dataset=banking77"
    assert main(["train", RECIPE, "--run-dir", str(other), "--quiet", "--no-eval",
                 *[p for s in settings for p in ("--set", s)]]) == 0
    with pytest.raises(InnerloopError, match="was trained on banking77"):
        out_of_scope.out_of_scope_run(other)
    with pytest.raises(InnerloopError, match="'data.val_split' is fixed by the trained run"):
        out_of_scope.out_of_scope_run(run_dir, overrides=["data.val_split=test"])
