"""How well CACTUs' partitions match the true classes, per embedding (for the README only).

    python -m innerloop.unsupervised.report_clustering [--split train] [--clusters 500]
        [--partitions 3] [--embeddings pca pca-unblurred random-conv4 autoencoder]

For each embedding: the seconds it took, and for partitions ``0 .. partitions-1`` (partition 0
on the unscaled embedding, the others randomly scaled, exactly as training makes them) the
adjusted Rand index and purity against the true characters, and the share of images in clusters
big enough for the recipes' tasks. This script reads the true labels of the split — to score the
clusters, never to make them; the training path (:func:`~innerloop.unsupervised.cactus.cactus_tasks`)
has no access to them.
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
from innerloop.unsupervised.cactus import CactusSettings, cluster_partitions, embed
from innerloop.unsupervised.clustering_quality import adjusted_rand_index, purity
from innerloop.unsupervised.embeddings import unlabeled_images

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--min-cluster-size", type=int, default=6, help="shots + queries of the tasks")
    parser.add_argument("--embeddings", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = load_split("omniglot", args.split, rotations=(0,))
    for name in args.embeddings:
        settings = replace(CactusSettings(clusters=args.clusters, partitions=args.partitions), **VARIANTS[name])
        print(json.dumps({"embedding": name, **{k: v for k, v in settings.__dict__.items()},
                          **score_embedding(split, settings, args.min_cluster_size)}), flush=True)


if __name__ == "__main__":
    main()
