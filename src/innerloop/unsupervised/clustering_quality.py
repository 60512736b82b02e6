"""How well a clustering matches reference labels: adjusted Rand index and purity.

Used only to *report* the quality of CACTUs' pseudo-labels against the true classes; nothing on
the training path calls these functions.

* Adjusted Rand index (Hubert & Arabie 1985): with ``n_ij`` the contingency table of the two
  labelings, ``a_i`` its row sums, ``b_j`` its column sums and ``C(m) = m (m - 1) / 2``,
  ``index = sum_ij C(n_ij)``, ``expected = sum_i C(a_i) sum_j C(b_j) / C(n)``,
  ``maximum = (sum_i C(a_i) + sum_j C(b_j)) / 2``, and
  ``ARI = (index - expected) / (maximum - expected)``: 1 for identical partitions, about 0 for
  independent ones.
* Purity: ``sum_j max_i n_ij / n``, the share of points whose cluster's most common reference
  label is their own.
"""

from __future__ import annotations

import torch
from torch import Tensor


def contingency_table(reference: Tensor, clusters: Tensor) -> Tensor:
    """``int64 [R, K]`` counts of points with reference label ``r`` in cluster ``k``."""
    _, reference_ids = torch.unique(reference, return_inverse=True)
    _, cluster_ids = torch.unique(clusters, return_inverse=True)
    rows, columns = int(reference_ids.max()) + 1, int(cluster_ids.max()) + 1
    flat = torch.bincount(reference_ids * columns + cluster_ids, minlength=rows * columns)
    return flat.view(rows, columns)


def _pairs(counts: Tensor) -> Tensor:
    counts = counts.to(torch.float64)
    return (counts * (counts - 1) / 2).sum()


def adjusted_rand_index(reference: Tensor, clusters: Tensor) -> float:
    """Adjusted Rand index of ``clusters`` against ``reference`` (both ``[N]`` labels)."""
    table = contingency_table(reference, clusters)
    index = _pairs(table)
    row_pairs, column_pairs = _pairs(table.sum(1)), _pairs(table.sum(0))
    expected = row_pairs * column_pairs / _pairs(torch.tensor([reference.numel()]))
    maximum = (row_pairs + column_pairs) / 2
    if float(maximum - expected) == 0.0:  # both labelings trivial (one group, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))


def purity(reference: Tensor, clusters: Tensor) -> float:
    """Share of points whose cluster's majority reference label is their own."""
    table = contingency_table(reference, clusters)
    return float(table.max(dim=0).values.sum()) / reference.numel()
