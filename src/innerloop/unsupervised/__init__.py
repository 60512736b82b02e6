"""Unsupervised meta-learning: meta-training tasks made from unlabeled data.

* :mod:`~innerloop.unsupervised.cactus` — CACTUs (Hsu, Levine & Finn, ICLR 2019): k-means
  partitions of embedded unlabeled images become N-way K-shot tasks (``data.pseudo_labels:
  cactus`` in a recipe).
* :mod:`~innerloop.unsupervised.kmeans` — seeded k-means with k-means++ in torch.
* :mod:`~innerloop.unsupervised.embeddings` — the embeddings clustered (PCA of pixels, a random
  Conv-4, a small autoencoder from :mod:`~innerloop.unsupervised.autoencoder`).
* :mod:`~innerloop.unsupervised.clustering_quality` — adjusted Rand index and purity, for reports.
"""

from innerloop.unsupervised.cactus import (CactusSettings, PseudoEpisodeIndices, PseudoLabelTasks,
                                           cactus_tasks, cluster_partitions, make_partitions)
from innerloop.unsupervised.clustering_quality import adjusted_rand_index, purity
from innerloop.unsupervised.embeddings import EMBEDDINGS, unlabeled_images
from innerloop.unsupervised.kmeans import KMeansResult, kmeans, kmeans_plus_plus

__all__ = ["EMBEDDINGS", "CactusSettings", "KMeansResult", "PseudoEpisodeIndices", "PseudoLabelTasks",
           "adjusted_rand_index", "cactus_tasks", "cluster_partitions", "kmeans", "kmeans_plus_plus",
           "make_partitions", "purity", "unlabeled_images"]
