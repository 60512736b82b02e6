"""Extract one member of a trained deep ensemble as a run of its own, to score it alone.

    python -m benchmarks.ensemble_member runs/uq-omniglot-maml-ensemble-5w1s 0 runs/maml-member0

Member ``k`` of an ensemble trained with ``model.ensemble: M`` and seed ``s`` was initialised
from seed ``s + k`` and trained on the run's meta-batches (those of seed ``s``); members share
no parameter and each gets its own loss's gradient, so for a deterministic method member 0 is
exactly the single learner of the same recipe and budget — the single-model baseline, for free
(``tests/test_ensemble.py`` checks it). The new run folder gets the member's weights from
``best.pt`` and ``last.pt`` and the config with ``model.ensemble: 1``; evaluate it with
``innerloop eval``. Its ``best.pt`` is the step the ensemble's validation chose, not the one the
member's own validation would have chosen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from innerloop.config import config_from_dict, save_config
from innerloop.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint


def extract_member(run_dir: Path, index: int, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (BEST, LAST):
        payload = load_checkpoint(run_dir / name)
        config = dict(payload["config"])
        size = config["model"].get("ensemble", 1)
        if not 0 <= index < size:
            raise SystemExit(f"{run_dir} is an ensemble of {size}; member {index} does not exist")
        prefix = f"members.{index}."
        model = {key.removeprefix(prefix): value for key, value in payload["model"].items()
                 if key.startswith(prefix)}
        config["model"] = {**config["model"], "ensemble": 1}
        config["name"] = f"{config['name']}-member{index}"
        # the model and where it came from; no optimizer state: the member is for evaluation
        save_checkpoint({"config": config, "step": payload["step"], "model": model}, out_dir / name)
    save_config(config_from_dict(config), out_dir / "config.yaml")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("index", type=int)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"member {args.index} of {args.run} -> {extract_member(args.run, args.index, args.out)}")


if __name__ == "__main__":
    main()
