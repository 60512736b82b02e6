"""Episodes per second of the tensor-store sampler vs decoding each image from the archive.

Both sides produce the same 32-task 5-way 1-shot, 15-query meta-batches (same classes, same
drawings, same preprocessing, rotations included) on one thread:

* ``innerloop``: :class:`~innerloop.tasks.EpisodeSampler` over the decoded uint8 store;
* ``per-image decoding``: what per-image dataset pipelines do — for every image of every episode,
  read its PNG from the open zip, decode, invert, resize to 28x28 with Lanczos, rotate, convert.

    python -m benchmarks.sampler_speed [--data-root DIR] [--batches 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import zipfile

import numpy as np
import torch

from innerloop.data.omniglot import (ARCHIVE_NAMES, load_omniglot, locate_archives, omniglot_split,
                                     preprocess_drawing)
from innerloop.tasks import EpisodeSampler

TASKS, WAYS, SHOTS, QUERIES = 32, 5, 1, 15


def member_index(paths: dict) -> tuple[dict[int, tuple[zipfile.ZipFile, str]], list[zipfile.ZipFile]]:
    """Store row → (open archive, member name), as a per-image dataset would keep it."""
    archives = [zipfile.ZipFile(paths[name]) for name in ARCHIVE_NAMES]
    rows = {}
    for archive in archives:
        for name in archive.namelist():
            if name.endswith(".png"):
                character, drawer = name.rsplit("/", 1)[-1][:-4].split("_")
                rows[(int(character) - 1) * 20 + int(drawer) - 1] = (archive, name)
    return rows, archives


def decode_meta_batch(sampler: EpisodeSampler, indices, rows) -> torch.Tensor:
    turns = sampler.split.quarter_turns[indices.class_ids]
    images = np.empty(tuple(indices.rows.shape) + (28, 28), dtype=np.float32)
    for t in range(indices.rows.shape[0]):
        for w in range(indices.rows.shape[1]):
            for e in range(indices.rows.shape[2]):
                archive, member = rows[int(indices.rows[t, w, e])]
                image = preprocess_drawing(archive.read(member), 28)
                images[t, w, e] = np.rot90(image, k=int(turns[t, w])) / 255.0
    return torch.from_numpy(images)


def measure(data_root: str | None, batches: int = 20) -> dict:
    """Episodes/s of the sampler and of per-image decoding on Omniglot's train split (one thread)."""
    torch.set_num_threads(1)
    store = load_omniglot(data_root, download=False)
    sampler = EpisodeSampler(omniglot_split(store, "train"), WAYS, SHOTS, QUERIES)
    rows, archives = member_index(locate_archives(data_root, download=False))

    generator = torch.Generator().manual_seed(0)
    sampler.sample(TASKS, generator)  # warm-up
    start = time.perf_counter()
    for _ in range(batches * 10):
        sampler.sample(TASKS, generator)
    ours = batches * 10 * TASKS / (time.perf_counter() - start)

    generator = torch.Generator().manual_seed(1)
    check = sampler.sample_indices(TASKS, generator)
    reference = decode_meta_batch(sampler, check, rows)
    episodes = sampler.gather(check)
    same = torch.allclose(episodes.support_x.squeeze(2), reference[:, :, :SHOTS].flatten(1, 2))
    start = time.perf_counter()
    for _ in range(batches):
        decode_meta_batch(sampler, sampler.sample_indices(TASKS, generator), rows)
    baseline = batches * TASKS / (time.perf_counter() - start)
    for archive in archives:
        archive.close()

    return {
        "benchmark": "sampler_speed",
        "meta_batch": f"{TASKS} tasks, {WAYS}-way {SHOTS}-shot, {QUERIES} queries, Omniglot train split",
        "innerloop_episodes_per_s": round(ours, 1),
        "per_image_decoding_episodes_per_s": round(baseline, 1),
        "speedup": round(ours / baseline, 1),
        "same_images": bool(same),
        "threads": 1,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = measure(args.data_root, args.batches)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
