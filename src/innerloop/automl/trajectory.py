"""Measures of a search trajectory: best score so far, evaluations needed to reach a target, regret.

A trajectory is the sequence of validation scores of the configurations a search evaluated, in
order. ``best_so_far[t] = max(scores[:t + 1])``; the evaluations needed to reach ``target`` is the
smallest ``t`` (counted from 1) with ``best_so_far[t - 1] >= target``; the regret after ``t``
evaluations is ``best_score - best_so_far[t - 1]``, with ``best_score`` the best score in the pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORE_TOLERANCE = 1e-9  # accuracies are ratios of counts; a score equal to the target reaches it


def best_so_far(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """The running maximum of ``scores``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"best_so_far: need a non-empty 1-D trajectory of scores, got shape {scores.shape}")
    return np.maximum.accumulate(scores)


def evaluations_to_reach(scores: Sequence[float] | np.ndarray, target: float) -> int | None:
    """How many evaluations the trajectory takes to score at least ``target`` (``None``: never)."""
    reached = np.flatnonzero(best_so_far(scores) >= target - SCORE_TOLERANCE)
    return int(reached[0]) + 1 if reached.size else None


def regret_curve(scores: Sequence[float] | np.ndarray, best_score: float, length: int) -> np.ndarray:
    """``best_score - best_so_far`` after 1..``length`` evaluations (a shorter trajectory's last
    value is held)."""
    running = best_so_far(scores)
    if length < 1:
        raise ValueError(f"regret_curve: length must be at least 1, got {length}")
    padded = np.concatenate([running, np.full(max(0, length - running.size), running[-1])])[:length]
    return best_score - padded
