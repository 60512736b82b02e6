"""The sinusoid regression task family of MAML (Finn et al. 2017, section 5.1), as a "dataset".

A task is ``y = amplitude * sin(x - phase)`` with ``amplitude ~ U[0.1, 5]``, ``phase ~ U[0, pi]``
and inputs ``x ~ U[-5, 5]``. There is nothing to download or decode: the "splits" only name the
independent seeded streams that training, validation and test draw from (training draws fresh
tasks each step; validation and test use fixed seeded task lists like every other dataset).

The heteroscedastic variant (``sinusoid-heteroscedastic``) adds Gaussian observation noise whose
standard deviation grows with the distance from the origin, ``noise_floor + noise_slope * |x|``
(0.05 at x = 0 to 0.55 at |x| = 5), so a learner must predict where it can be sure and where not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SinusoidSplit:
    """A named stream of sinusoid tasks (the ranges are the paper's)."""

    name: str
    amplitude_range: tuple[float, float] = AMPLITUDE_RANGE
    phase_range: tuple[float, float] = PHASE_RANGE
    input_range: tuple[float, float] = INPUT_RANGE
    noise_floor: float = 0.0  # observation noise std at x = 0
    noise_slope: float = 0.0  # growth of the noise std per unit of |x|

    @property
    def noisy(self) -> bool:
        return self.noise_floor > 0 or self.noise_slope > 0


def load_sinusoid(root: str | Path | None = None, image_size: int | None = None,
                  download: bool = True) -> None:
    """Nothing to load: the tasks are generated (the signature matches the image datasets)."""
    return None


HETEROSCEDASTIC_NOISE = {"noise_floor": 0.05, "noise_slope": 0.1}


def sinusoid_split(store: None, name: str, rotations: tuple[int, ...] | None = None) -> SinusoidSplit:
    return SinusoidSplit(name)


def heteroscedastic_sinusoid_split(store: None, name: str,
                                   rotations: tuple[int, ...] | None = None) -> SinusoidSplit:
    return SinusoidSplit(name, **HETEROSCEDASTIC_NOISE)
