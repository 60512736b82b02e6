"""Out-of-scope detection on CLINC150 (Larson et al., EMNLP 2019): the adapted learner also says
"none of these".

CLINC150 ships utterances that belong to none of its 150 intents (``oos_train`` 100, ``oos_val``
100, ``oos_test`` 1,000). Protocol, on the same fixed seeded episodes as ``innerloop eval``:

1. every test episode (``ways`` meta-test intents, ``shots`` support and ``queries`` query
   utterances each) gets ``oos_queries`` out-of-scope utterances of ``oos_test`` added to its
   query set (drawn without replacement per episode, seeded);
2. the learner adapts on the support set as always and gives each query its class probabilities
   ``probs[q]``; the confidence is ``confidence[q] = max_k probs[q, k]``. The in-scope queries
   are predicted as in ``innerloop eval`` (the same batch, so the same numbers), the
   out-of-scope ones as a query batch of their own after the same support set: a transductive
   learner (batch-norm statistics over the query batch) then never sees in- and out-of-scope
   queries mixed;
3. a query is answered "out of scope" when ``confidence[q] < threshold``.

``threshold`` is chosen on meta-validation episodes (the validation intents, with out-of-scope
queries from ``oos_train`` + ``oos_val``): the value that maximises
``(in_scope_accuracy + out_of_scope_recall) / 2`` there, so no test data tunes it.

Reported, each with a 95% interval over episodes: ``in_scope_accuracy`` (an in-scope query
counts as correct only when it is not rejected and its class is right), ``out_of_scope_recall``
(out-of-scope queries rejected), ``accuracy_without_rejection`` (the plain few-shot accuracy on
the in-scope queries), and ``auroc`` (how well confidence separates in-scope from out-of-scope
queries, independent of the threshold; per episode, then averaged). Episodes whose adaptation
diverged (a non-finite confidence) are left out of the threshold choice and of every score, and
counted (``non_finite``), as ``innerloop eval`` does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from innerloop.algorithms.base import MetaLearner
from innerloop.build import UserBackbone, build_sampler, load_splits
from innerloop.data import intents
from innerloop.errors import InnerloopError
from innerloop.evaluate.protocol import mean_and_ci95, seeded_batches
from innerloop.evaluate.report import today
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.fixed import FixedEpisodes

OUT_OF_SCOPE_DATASETS = ("clinc150", "clinc150-cross-domain")
POOL_PARTS = {"val": ("train", "val"), "test": ("test",)}  # oos_<part> utterances per split


def out_of_scope_pool(split: str, root: str | Path | None = None) -> Tensor:
    """Embeddings ``[N, 384]`` of CLINC150's out-of-scope utterances for ``split``'s episodes
    (``val``: oos_train + oos_val, 200; ``test``: oos_test, 1,000), frozen MiniLM as for intents."""
    from innerloop.nn.sentence_encoder import cached_embeddings

    texts: list[str] = []
    for part in POOL_PARTS[split]:
        corpus = intents.read_clinc150(part, root, out_of_scope=True)
        oos_label = corpus.label_names.index(intents.OUT_OF_SCOPE)
        texts += [text for text, label in zip(corpus.texts, corpus.labels) if label == oos_label]
    return cached_embeddings(texts, f"clinc150-oos-{split}").to(torch.float32)


def out_of_scope_queries(batch: Episodes, pool: Tensor, oos_queries: int,
                         generator: torch.Generator) -> Episodes:
    """``batch``'s support sets with ``oos_queries`` rows of ``pool`` (drawn without replacement
    per task) as their queries. Their ``query_y`` is 0: a placeholder no learner reads when it
    predicts."""
    if not 1 <= oos_queries <= pool.shape[0]:
        raise InnerloopError(f"oos_queries must be in 1..{pool.shape[0]} (the out-of-scope "
                             f"utterances available), got {oos_queries}")
    tasks = batch.num_tasks
    picks = torch.stack([torch.randperm(pool.shape[0], generator=generator)[:oos_queries] for _ in range(tasks)])
    return Episodes(batch.support_x, batch.support_y, pool[picks],
                    torch.zeros(tasks, oos_queries, dtype=batch.query_y.dtype), batch.ways, batch.shots,
                    batch.queries, batch.class_ids)


def confidences(learner: MetaLearner, episodes: FixedEpisodes, pool: Tensor, oos_queries: int,
                batch_size: int = 50) -> tuple[Tensor, Tensor, Tensor]:
    """Per query of every episode: the confidence, whether the argmax class is right, and
    whether the query is out of scope — each ``[episodes, Q + oos_queries]``."""
    generator = torch.Generator().manual_seed(episodes.seed + 1)
    all_confidence, all_correct, all_oos = [], [], []
    learner.eval()
    with torch.no_grad():
        for batch in seeded_batches(episodes, batch_size):
            in_scope = learner.predictive(batch).probs
            outside = learner.predictive(out_of_scope_queries(batch, pool, oos_queries, generator)).probs
            confidence, predicted = torch.cat([in_scope, outside], dim=1).max(dim=-1)
            is_oos = torch.zeros_like(predicted, dtype=torch.bool)
            is_oos[:, in_scope.shape[1]:] = True
            correct = torch.zeros_like(is_oos)
            correct[:, :in_scope.shape[1]] = predicted[:, :in_scope.shape[1]] == batch.query_y
            all_confidence.append(confidence.double())
            all_correct.append(correct)
            all_oos.append(is_oos)
    return torch.cat(all_confidence), torch.cat(all_correct), torch.cat(all_oos)


def rejection_scores(confidence: Tensor, correct: Tensor, is_oos: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Per-episode in-scope accuracy (correct and kept) and out-of-scope recall (rejected)."""
    rejected = confidence < threshold
    in_scope = ~is_oos
    accuracy = ((correct & ~rejected).double().sum(1) / in_scope.double().sum(1))
    recall = ((rejected & is_oos).double().sum(1) / is_oos.double().sum(1))
    return accuracy, recall


def best_threshold(confidence: Tensor, correct: Tensor, is_oos: Tensor) -> float:
    """The confidence threshold maximising mean(in-scope accuracy, out-of-scope recall)."""
    candidates = torch.unique(confidence.flatten())
    if not bool(torch.isfinite(candidates).all()):
        raise ValueError("drop episodes with non-finite confidences before choosing a threshold")
    if candidates.numel() > 2000:
        candidates = torch.quantile(candidates, torch.linspace(0, 1, 2000, dtype=candidates.dtype))
    best, best_score = 0.0, -1.0
    for threshold in candidates.tolist() + [float(confidence.max()) + 1e-12]:
        accuracy, recall = rejection_scores(confidence, correct, is_oos, threshold)
        score = 0.5 * float(accuracy.mean() + recall.mean())
        if score > best_score:
            best, best_score = threshold, score
    return best


def episode_auroc(confidence: Tensor, is_oos: Tensor) -> Tensor:
    """Per episode, the probability that an in-scope query is more confident than an
    out-of-scope one (ties count one half): the area under the ROC curve."""
    inside = confidence.unsqueeze(2)  # [E, Q, 1] against every query [E, 1, Q]
    outside = confidence.unsqueeze(1)
    pairs = (~is_oos).unsqueeze(2) & is_oos.unsqueeze(1)
    wins = (inside > outside).double() + 0.5 * (inside == outside).double()
    return (wins * pairs).sum((1, 2)) / pairs.double().sum((1, 2))


@dataclass(frozen=True)
class OutOfScopeReport:
    method: str
    dataset: str
    ways: int
    shots: int
    queries: int
    oos_queries: int
    episodes: int
    seed: int
    checkpoint: str
    threshold: float
    scores: dict[str, list[float]]  # name -> [mean, ci95] over test episodes
    date: str
    transductive: bool = False
    non_finite: int = 0  # test episodes left out: their adaptation diverged

    @property
    def stem(self) -> str:
        return (f"out-of-scope-test-{self.ways}w{self.shots}s{self.queries}q{self.oos_queries}oos-"
                f"{self.checkpoint.removesuffix('.pt')}-{self.episodes}ep-seed{self.seed}")

    def markdown(self) -> str:
        lines = [f"# {self.method} on {self.dataset}: out-of-scope detection, {self.ways}-way "
                 f"{self.shots}-shot", "",
                 f"{self.queries} in-scope queries per class and {self.oos_queries} out-of-scope "
                 f"queries per episode; {self.episodes} episodes (seed {self.seed}); rejection below "
                 f"confidence {self.threshold:.4f} (chosen on meta-validation episodes)."
                 + (f" {self.non_finite} test episodes diverged (non-finite confidences) and are "
                    f"left out." if self.non_finite else ""), "",
                 "| score | mean ± 95% CI |", "| --- | --- |"]
        lines += [f"| {name.replace('_', ' ')} | {100 * mean:.2f}% ± {100 * ci95:.2f}% |"
                  for name, (mean, ci95) in self.scores.items()]
        return "\n".join(lines + [""])

    def save(self, run_dir: Path) -> tuple[Path, Path]:
        json_path, markdown_path = run_dir / f"{self.stem}.json", run_dir / f"{self.stem}.md"
        json_path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        markdown_path.write_text(self.markdown())
        return json_path, markdown_path


def finite_episodes(confidence: Tensor, correct: Tensor, is_oos: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], int]:
    """The episodes whose confidences are all finite, and how many were left out."""
    keep = torch.isfinite(confidence).all(dim=1)
    return (confidence[keep], correct[keep], is_oos[keep]), int((~keep).sum())


def out_of_scope_run(run_dir: str | Path, checkpoint: str = "best", data_root: str | Path | None = None,
                     oos_queries: int = 15, overrides: list[str] | None = None,
                     backbone: UserBackbone | None = None) -> OutOfScopeReport:
    """Score a CLINC150 run's out-of-scope detection (see the module docstring); saves the report.
    ``overrides`` as for :func:`~innerloop.evaluate.run.evaluate_run`; ``backbone`` your module for
    a run trained on one."""
    from innerloop.evaluate.run import check_evaluation_overrides, load_run

    run_dir = Path(run_dir)
    check_evaluation_overrides(overrides)
    config, learner, payload, path = load_run(run_dir, checkpoint, overrides, backbone)
    if config.data.dataset not in OUT_OF_SCOPE_DATASETS:
        raise InnerloopError(f"out-of-scope detection needs CLINC150's out-of-scope utterances; "
                             f"{run_dir} was trained on {config.data.dataset} (use a run on "
                             f"{' or '.join(OUT_OF_SCOPE_DATASETS)})")
    evaluation = config.eval
    splits = load_splits(config, data_root, [config.data.val_split, config.data.test_split])
    scored = {}
    for role, split_name in (("val", config.data.val_split), ("test", config.data.test_split)):
        sampler = build_sampler(config, splits[split_name], evaluation.ways, evaluation.shots, evaluation.queries)
        fixed = FixedEpisodes(sampler, evaluation.episodes, evaluation.seed)
        scored[role] = finite_episodes(*confidences(
            learner, fixed, out_of_scope_pool(role, data_root or config.data.root), oos_queries,
            evaluation.batch_size))
    (validation, _), ((confidence, correct, is_oos), non_finite) = scored["val"], scored["test"]
    if validation[0].numel() == 0 or confidence.numel() == 0:
        raise InnerloopError(f"every {'validation' if validation[0].numel() == 0 else 'test'} episode's "
                             f"adaptation diverged (non-finite confidences); nothing to score")
    threshold = best_threshold(*validation)
    accuracy, recall = rejection_scores(confidence, correct, is_oos, threshold)
    plain = correct.double().sum(1) / (~is_oos).double().sum(1)
    scores = {"in_scope_accuracy": accuracy, "out_of_scope_recall": recall,
              "accuracy_without_rejection": plain, "auroc": episode_auroc(confidence, is_oos)}
    report = OutOfScopeReport(
        method=learner.name, dataset=config.data.dataset, ways=evaluation.ways, shots=evaluation.shots,
        queries=evaluation.queries, oos_queries=oos_queries, episodes=evaluation.episodes,
        seed=evaluation.seed, checkpoint=path.name, threshold=threshold,
        scores={name: list(mean_and_ci95(values)) for name, values in scores.items()}, date=today(),
        transductive=learner.transductive, non_finite=non_finite)
    report.save(run_dir)
    return report
