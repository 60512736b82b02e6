"""A simple model-based continuation: predict the target's scores from the meta-training datasets
whose scores agree with what the target has scored so far.

In the spirit of active testing (Leite, Brazdil & Vanschoren 2012, "Selecting Classification
Algorithms with Active Testing"): datasets are similar when configurations rank alike on them,
which the evaluations already made on the target measure directly. The rule, in this file's names:
with ``evaluated`` pool indices and the target's ``observed`` scores on them,

* ``similarity[j] = pearson(observed, knowledge.scores[j, evaluated])`` for every meta-training
  dataset ``j`` (0 where undefined: fewer than two evaluations, or no spread);
* the ``num_neighbours`` most similar datasets (``fallback_neighbours`` while no similarity is
  defined, e.g. the meta-feature nearest ones) predict
  ``predicted[c] = mean_j relative[j, c]``, ``relative[j] = (scores[j] - min scores[j]) /
  (max scores[j] - min scores[j])`` (each dataset's scores rescaled to [0, 1]);
* the next configuration is the unevaluated one with the highest prediction (the first on ties).

:func:`similarity_search` evaluates an ``initial`` list first (e.g. the warm-start configurations),
then proposes with :func:`propose_next`; no configuration is evaluated twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from innerloop.automl.knowledge import MetaKnowledge


def relative_scores(scores: np.ndarray) -> np.ndarray:
    """Each row rescaled to [0, 1] (a row with no spread becomes all ones)."""
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    spread = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (scores - low) / spread, 1.0)


def score_similarity(knowledge: MetaKnowledge, evaluated: Sequence[int], observed: Sequence[float]) -> np.ndarray:
    """Pearson correlation of the target's observed scores with each dataset's scores on the same
    configurations (0 where it is undefined)."""
    similarity = np.zeros(knowledge.num_datasets)
    if len(evaluated) < 2:
        return similarity
    target = np.asarray(observed, dtype=np.float64) - np.mean(observed)
    theirs = knowledge.scores[:, list(evaluated)]
    theirs = theirs - theirs.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(theirs, axis=1) * np.linalg.norm(target)
    defined = norms > 1e-12
    similarity[defined] = (theirs[defined] @ target) / norms[defined]
    return similarity


def propose_next(knowledge: MetaKnowledge, evaluated: Sequence[int], observed: Sequence[float], num_neighbours: int,
                 fallback_neighbours: Sequence[int] = ()) -> int:
    """The unevaluated pool index with the highest mean relative score on the most similar datasets."""
    if len(evaluated) >= len(knowledge.configurations):
        raise ValueError("propose_next: every configuration of the pool has been evaluated")
    similarity = score_similarity(knowledge, evaluated, observed)
    if np.any(similarity != 0.0) or not fallback_neighbours:
        neighbours = np.argsort(-similarity, kind="stable")[:num_neighbours]
    else:
        neighbours = np.asarray(list(fallback_neighbours)[:num_neighbours])
    predicted = relative_scores(knowledge.scores)[neighbours].mean(axis=0)
    predicted[list(evaluated)] = -np.inf
    return int(np.argmax(predicted))


def similarity_search(knowledge: MetaKnowledge, initial: Sequence[int], objective: Callable[[int], float],
                      budget: int, num_neighbours: int = 5,
                      fallback_neighbours: Sequence[int] = ()) -> tuple[list[int], np.ndarray]:
    """Evaluate ``initial`` pool indices, then :func:`propose_next` until ``budget`` evaluations;
    ``objective(index)`` scores one pool configuration on the target. Returns the evaluated
    indices in order and their scores."""
    if budget < 1 or budget > len(knowledge.configurations):
        raise ValueError(f"similarity_search: budget must lie in [1, {len(knowledge.configurations)}], got {budget}")
    if len(set(initial)) != len(initial):
        raise ValueError(f"similarity_search: initial configurations repeat an index: {list(initial)}")
    evaluated: list[int] = []
    observed: list[float] = []
    while len(evaluated) < budget:
        if len(evaluated) < len(initial):
            index = int(initial[len(evaluated)])
        else:
            index = propose_next(knowledge, evaluated, observed, num_neighbours, fallback_neighbours)
        evaluated.append(index)
        observed.append(float(objective(index)))
    return evaluated, np.array(observed)
