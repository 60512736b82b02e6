"""Functions drawn from Gaussian processes, as "datasets" (see :mod:`innerloop.tasks.gp_functions`).

``gp`` draws each task's kernel among RBF, Matérn-5/2 and periodic; ``gp-rbf``,
``gp-matern52`` and ``gp-periodic`` fix it. Like the sinusoid, nothing is downloaded: the splits
name independent seeded streams of tasks. A split holds the ranges that each task draws its
kernel hyperparameters from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from innerloop.errors import TaskError

SPLITS = ("train", "val", "test")
GP_KERNELS = ("rbf", "matern52", "periodic")


@dataclass(frozen=True)
class GaussianProcessSplit:
    """A named stream of GP tasks and the ranges their hyperparameters are drawn from."""

    name: str
    kernels: tuple[str, ...] = GP_KERNELS
    input_range: tuple[float, float] = (-2.0, 2.0)
    lengthscale_range: tuple[float, float] = (0.3, 1.0)
    variance_range: tuple[float, float] = (0.5, 1.5)
    period_range: tuple[float, float] = (1.0, 2.0)
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        unknown = [k for k in self.kernels if k not in GP_KERNELS]
        if not self.kernels or unknown:
            raise TaskError(f"GP kernels must be a non-empty subset of {', '.join(GP_KERNELS)}, "
                            f"got {self.kernels}")


def load_gaussian_process(root: str | Path | None = None, image_size: int | None = None,
                          download: bool = True) -> None:
    """Nothing to load: the tasks are generated (the signature matches the image datasets)."""
    return None


def gaussian_process_split_loader(kernels: tuple[str, ...] = GP_KERNELS) -> Callable[..., GaussianProcessSplit]:
    """The ``split`` function of a GP dataset whose tasks draw their kernel from ``kernels``."""

    def split(store: None, name: str, rotations: tuple[int, ...] | None = None) -> GaussianProcessSplit:
        return GaussianProcessSplit(name, kernels=kernels)

    return split
