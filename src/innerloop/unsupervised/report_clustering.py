"""How well CACTUs' partitions match the true classes, per embedding (for the README only).

    python -m innerloop.unsupervised.report_clustering [--split train] [--clusters 500]
        [--partitions 3] [--embeddings pca pca-unblurred random-conv4 autoencoder]
    python -m innerloop.unsupervised.report_clustering --embedding-baseline [--episodes 1000]

For each embedding: the seconds it took, and for partitions ``0 .. partitions-1`` (partition 0
on the unscaled embedding, the others randomly scaled, exactly as training makes them) the
adjusted Rand index and purity against the true characters, and the share of images in clusters
big enough for the recipes' tasks. This script reads the true labels of the split — to score the
clusters, never to make them; the training path (:func:`~innerloop.unsupervised.cactus.cactus_tasks`)
has no access to them.

``--embedding-baseline`` scores the clustered embedding itself as a few-shot learner, without any
meta-training: PCA fitted on the split's unlabeled (blurred) pixels, each query labelled by its
nearest support prototype (Euclidean) in that space, on the same fixed test episodes as
``innerloop eval`` (Omniglot ``test``, 5-way 1-shot, 15 queries, seed 0, four rotations).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from innerloop.data import load_split
from innerloop.data.store import ClassSplit
from innerloop.evaluate.protocol import mean_and_ci95
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.unsupervised.cactus import CactusSettings, cluster_partitions, embed
from innerloop.unsupervised.clustering_quality import adjusted_rand_index, purity
from innerloop.unsupervised.embeddings import as_float_images, blurred_pixels, fit_pca, unlabeled_images

VARIANTS = {  # report name -> settings changed from CactusSettings()
    "pca": {},
    "pca-unblurred": {"blur_sigma": 0.0},
    "random-conv4": {"embedding": "random-conv4"},
    "autoencoder": {"embedding": "autoencoder"},
}


def true_characters(split: ClassSplit) -> torch.Tensor:
    """The class of every image of :func:`unlabeled_images` (same order): for scoring only."""
    store = split.store
    row_class = torch.repeat_interleave(torch.arange(store.num_classes), store.class_counts)
    rows = torch.cat([torch.arange(int(store.class_offsets[c]), int(store.class_offsets[c] + store.class_counts[c]))
                      for c in torch.unique(split.base_classes).tolist()])
    return row_class[rows.sort().values]


def score_embedding(split: ClassSplit, settings: CactusSettings, min_cluster_size: int) -> dict[str, float]:
    images = unlabeled_images(split)
    reference = true_characters(split)
    start = time.perf_counter()
    features = embed(images, settings)
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    assignments = cluster_partitions(features, settings)
    cluster_seconds = (time.perf_counter() - start) / settings.partitions
    rand = torch.tensor([adjusted_rand_index(reference, a) for a in assignments])
    purities = torch.tensor([purity(reference, a) for a in assignments])
    usable = torch.tensor([float((torch.bincount(a)[a] >= min_cluster_size).float().mean()) for a in assignments])
    ari_mean, ari_ci = mean_and_ci95(rand)
    purity_mean, purity_ci = mean_and_ci95(purities)
    return {"embed_s": embed_seconds, "kmeans_s_per_partition": cluster_seconds,
            "ari_unscaled": float(rand[0]), "purity_unscaled": float(purities[0]),
            "ari_mean": ari_mean, "ari_ci95": ari_ci, "purity_mean": purity_mean, "purity_ci95": purity_ci,
            "share_in_usable_clusters": float(usable.mean())}


def embedding_baseline(train: ClassSplit, test: ClassSplit, settings: CactusSettings, episodes: int = 1000,
                       ways: int = 5, shots: int = 1, queries: int = 15, seed: int = 0) -> tuple[float, float]:
    """Accuracy (mean, 95% CI half-width) of nearest-prototype classification in the PCA
    embedding of ``train``'s unlabeled images on ``episodes`` fixed ``test`` episodes."""
    mean, components = fit_pca(blurred_pixels(as_float_images(unlabeled_images(train)), settings.blur_sigma),
                               settings.embedding_dim)
    fixed = FixedEpisodes(EpisodeSampler(test, ways, shots, queries), episodes, seed)
    accuracies = []
    for batch in fixed.batches(50):
        def project(images: torch.Tensor) -> torch.Tensor:
            flat = blurred_pixels(images.flatten(0, 1), settings.blur_sigma).double()
            return ((flat - mean) @ components).view(*images.shape[:2], -1)
        support, query = project(batch.support_x), project(batch.query_x)
        prototypes = torch.zeros(support.shape[0], ways, support.shape[-1], dtype=support.dtype)
        prototypes.scatter_add_(1, batch.support_y.unsqueeze(-1).expand_as(support), support)
        predictions = torch.cdist(query, prototypes / shots).argmin(-1)
        accuracies.append((predictions == batch.query_y).double().mean(1))
    return mean_and_ci95(torch.cat(accuracies))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--min-cluster-size", type=int, default=6, help="shots + queries of the tasks")
    parser.add_argument("--embeddings", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embedding-baseline", action="store_true",
                        help="score nearest prototypes in the PCA embedding on the fixed test episodes")
    parser.add_argument("--episodes", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = load_split("omniglot", args.split, rotations=(0,))
    if args.embedding_baseline:
        test = load_split("omniglot", "test")
        for name in ("pca", "pca-unblurred"):
            settings = replace(CactusSettings(), **VARIANTS[name])
            accuracy, ci95 = embedding_baseline(split, test, settings, args.episodes)
            print(json.dumps({"embedding": name, "blur_sigma": settings.blur_sigma,
                              "embedding_dim": settings.embedding_dim, "episodes": args.episodes,
                              "accuracy": accuracy, "ci95": ci95}), flush=True)
        return
    for name in args.embeddings:
        settings = replace(CactusSettings(clusters=args.clusters, partitions=args.partitions), **VARIANTS[name])
        print(json.dumps({"embedding": name, **{k: v for k, v in settings.__dict__.items()},
                          **score_embedding(split, settings, args.min_cluster_size)}), flush=True)


if __name__ == "__main__":
    main()
