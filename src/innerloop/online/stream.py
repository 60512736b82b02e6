"""The class-stream protocol: classes arrive in sequence, and the learner is scored after each arrival.

A :class:`ClassStream` draws ``num_classes`` classes of a split (for Omniglot: the *evaluation*
alphabets, none of which a learner meta-trained on the background alphabets has seen) in a
seeded order, and for each class ``train_shots`` training images and ``test_shots`` held-out
images, all distinct. It is one ``num_classes``-way episode of
:class:`~innerloop.tasks.sampler.EpisodeSampler` drawn with ``torch.Generator().manual_seed(seed)``,
so the same seed gives the same stream (class order and images) on every machine. Stream label
``c`` is the ``c``-th class of the order.

Classes arrive ``classes_per_arrival`` at a time. An :class:`Arrival` holds the new classes'
training images class by class (``train_shots`` of the first new class, then of the second ...),
in the order a learner that updates on one image at a time sees them. How the two families of
learners map onto arrivals:

* class-incremental learners (OML, naive fine-tuning) read an arrival as a run of single
  images (or small batches) and take one SGD step on each; with ``classes_per_arrival = 1`` the
  protocol is OML's (one class at a time);
* task-stream learners (FTML) read an arrival as one ``classes_per_arrival``-way task whose
  support set is the arrival's training images; "tasks seen" are the arrivals so far, and the
  held-out images of a class are its task's query set.

After every arrival ``t`` :func:`evaluate_stream` scores every class seen so far on its held-out
images, in two views (``VIEWS``), and keeps the per-class accuracies ``accuracy[view][t, c]``
(NaN for classes not yet seen):

* ``"all_seen"``: each image is classified among *all* classes seen so far
  (``learner.logits(images, seen_classes)``) — class-incremental accuracy on all seen classes;
* ``"within_task"``: each image is classified among the classes of its own arrival
  (``learner.logits(images, arrival_classes)``) — for FTML, accuracy on each seen task after
  adapting to it from the current meta-parameters.

Only seen classes are ever offered as candidates or scored. From the matrix:

* accuracy on seen classes after arrival ``t``: ``mean_c accuracy[t, c]`` over seen ``c``;
* forgetting: for each class not in the last arrival, the best accuracy it ever had
  (``max_t accuracy[t, c]`` from its arrival on) minus its final accuracy, averaged over classes
  (a learner that never changes has forgetting 0 in the within-task view; in the all-seen view
  later classes also compete with earlier ones, so even a fixed predictor can lose accuracy);
* new-class accuracy: ``accuracy[t, c]`` for the classes of arrival ``t``, right after it;
* learning speed: the learner calls ``probe`` before its first update and after each update on
  an arrival (one SGD step for OML and fine-tuning, one inner step for FTML); the protocol
  records the within-task accuracy of the new classes' held-out images at each call
  (``new_class_curve``), and :meth:`StreamRecord.updates_to_reach` counts the updates until a
  threshold is reached.

:func:`summarize_records` turns the records of several seeds (stream orders) into means with 95%
Student-t intervals over seeds (:func:`innerloop.evaluate.protocol.mean_and_t_ci95`: with a few
stream orders the normal quantile 1.96 would be too narrow, ×1.21 at 8 orders), and
:func:`paired_difference` gives the mean and Student-t interval of the per-seed differences of
two learners scored on the same streams. These intervals cover the variation over stream orders
only: a learner trained once is one draw of its training seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from innerloop.data.store import ClassSplit
from innerloop.errors import TaskError
from innerloop.evaluate.protocol import mean_and_t_ci95
from innerloop.tasks.sampler import EpisodeSampler, check_episode_shape

VIEWS = ("all_seen", "within_task")

# predict(images) -> logits over the classes of the arrival being learned, in arrival order
Predictor = Callable[[Tensor], Tensor]
Probe = Callable[[Predictor], None]


@dataclass(frozen=True)
class Arrival:
    """The classes that arrive at one point of the stream and their training images."""

    index: int  # position of the arrival in the stream, 0-based
    classes: Tensor  # int64 [classes_per_arrival] stream labels of the new classes
    train_x: Tensor  # [classes_per_arrival * train_shots, C, H, W], class by class
    train_y: Tensor  # int64 [classes_per_arrival * train_shots] stream labels


class StreamLearner(Protocol):
    """What :func:`evaluate_stream` needs from a learner."""

    name: str

    def start_stream(self, num_classes: int, seed: int) -> None:
        """Forget any previous stream; the stream has labels ``0..num_classes-1``."""

    def learn(self, arrival: Arrival, probe: Probe | None = None) -> None:
        """Learn the arrival's classes; call ``probe`` before the first and after each update."""

    def logits(self, images: Tensor, classes: Tensor) -> Tensor:
        """Scores ``[B, len(classes)]`` of ``images`` for the (seen) stream labels ``classes``."""


class ClassStream:
    """A seeded sequence of classes with training and held-out images (see the module docstring).

    Raises:
        TaskError: when the split has fewer than ``num_classes`` classes, a class has fewer than
            ``train_shots + test_shots`` images, or ``classes_per_arrival`` does not divide
            ``num_classes``.
    """

    def __init__(self, split: ClassSplit, num_classes: int, train_shots: int = 5, test_shots: int = 15,
                 classes_per_arrival: int = 5, seed: int = 0) -> None:
        check_episode_shape(split.name, split.num_classes, split.min_examples_per_class,
                            num_classes, train_shots, test_shots)
        if classes_per_arrival < 1 or num_classes % classes_per_arrival != 0:
            raise TaskError(f"classes_per_arrival must be >= 1 and divide num_classes; got "
                            f"{classes_per_arrival} for {num_classes} classes")
        if test_shots < 1:
            raise TaskError("test_shots must be >= 1: every class needs held-out images to be scored")
        self.split = split
        self.num_classes, self.train_shots, self.test_shots = num_classes, train_shots, test_shots
        self.classes_per_arrival, self.seed = classes_per_arrival, seed
        sampler = EpisodeSampler(split, ways=num_classes, shots=train_shots, queries=test_shots)
        indices = sampler.sample_indices(1, torch.Generator().manual_seed(seed))
        episode = sampler.gather(indices)[0]
        self.split_class_ids = indices.class_ids[0]  # stream label -> class of the split
        self.rows = indices.rows[0]  # [num_classes, train + test] store rows, train first
        self.train_x, self.train_y = episode.support_x, episode.support_y
        self.test_x, self.test_y = episode.query_x, episode.query_y

    @property
    def num_arrivals(self) -> int:
        return self.num_classes // self.classes_per_arrival

    @property
    def store_classes(self) -> Tensor:
        """Class index in the store of each stream label (for Omniglot: character id − 1)."""
        return self.split.base_classes[self.split_class_ids]

    def arrival_classes(self, index: int) -> Tensor:
        first = index * self.classes_per_arrival
        return torch.arange(first, first + self.classes_per_arrival)

    def arrival(self, index: int) -> Arrival:
        if not 0 <= index < self.num_arrivals:
            raise IndexError(f"the stream has {self.num_arrivals} arrivals, asked for arrival {index}")
        rows = slice(index * self.classes_per_arrival * self.train_shots,
                     (index + 1) * self.classes_per_arrival * self.train_shots)
        return Arrival(index, self.arrival_classes(index), self.train_x[rows], self.train_y[rows])

    def test_set(self, classes: Tensor) -> tuple[Tensor, Tensor]:
        """The held-out images of ``classes`` and their stream labels."""
        keep = torch.isin(self.test_y, classes)
        return self.test_x[keep], self.test_y[keep]


@dataclass
class StreamRecord:
    """Everything measured on one stream (one seed) for one learner."""

    method: str
    seed: int
    arrival_classes: list[list[int]]
    accuracy: dict[str, Tensor]  # view -> float64 [num_arrivals, num_classes], NaN = not yet seen
    new_class_curve: list[list[float]] = field(default_factory=list)  # per arrival: probe accuracies
    seconds: float = 0.0

    def seen_accuracy(self, view: str) -> Tensor:
        """Mean accuracy over the classes seen so far, after each arrival: ``[num_arrivals]``."""
        return torch.nanmean(self.accuracy[view], dim=1)

    def new_class_accuracy(self, view: str) -> Tensor:
        """Accuracy of each arrival's classes right after that arrival: ``[num_arrivals]``."""
        return torch.stack([self.accuracy[view][t, classes].mean()
                            for t, classes in enumerate(self.arrival_classes)])

    def forgetting(self, view: str) -> float:
        """Best accuracy minus final accuracy, averaged over the classes not in the last arrival."""
        matrix = self.accuracy[view]
        earlier = [c for classes in self.arrival_classes[:-1] for c in classes]
        if not earlier:
            return math.nan
        best = torch.stack([matrix[:, c][~torch.isnan(matrix[:, c])].max() for c in earlier])
        return float((best - matrix[-1, earlier]).mean())

    def updates_to_reach(self, threshold: float) -> Tensor:
        """Updates each arrival needed before its new classes reached ``threshold`` within-task
        accuracy (0: already before any update); NaN where it never did."""
        counts = []
        for curve in self.new_class_curve:
            reached = [index for index, accuracy in enumerate(curve) if accuracy >= threshold]
            counts.append(float(reached[0]) if reached else math.nan)
        return torch.tensor(counts, dtype=torch.float64)

    def to_json(self) -> dict:
        return {"method": self.method, "seed": self.seed, "seconds": round(self.seconds, 2),
                "arrival_classes": self.arrival_classes,
                "seen_accuracy": {view: self.seen_accuracy(view).tolist() for view in VIEWS},
                "new_class_accuracy": {view: self.new_class_accuracy(view).tolist() for view in VIEWS},
                "forgetting": {view: self.forgetting(view) for view in VIEWS},
                "new_class_curve": self.new_class_curve}


def per_class_accuracy(logits: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """Accuracy of each of ``classes`` when ``logits [B, len(classes)]`` score ``classes``."""
    predicted = classes[logits.argmax(dim=1)]
    correct = (predicted == labels).to(torch.float64)
    return torch.stack([correct[labels == c].mean() for c in classes])


@torch.no_grad()
def _score_seen(learner: StreamLearner, stream: ClassStream, arrivals_seen: int) -> dict[str, Tensor]:
    rows = {view: torch.full((stream.num_classes,), math.nan, dtype=torch.float64) for view in VIEWS}
    seen = torch.arange(arrivals_seen * stream.classes_per_arrival)
    images, labels = stream.test_set(seen)
    rows["all_seen"][seen] = per_class_accuracy(learner.logits(images, seen), labels, seen)
    for index in range(arrivals_seen):
        classes = stream.arrival_classes(index)
        images, labels = stream.test_set(classes)
        rows["within_task"][classes] = per_class_accuracy(learner.logits(images, classes), labels, classes)
    return rows


def evaluate_stream(learner: StreamLearner, stream: ClassStream) -> StreamRecord:
    """Run ``learner`` over ``stream`` and score it after every arrival (module docstring)."""
    start = time.perf_counter()
    learner.start_stream(stream.num_classes, stream.seed)
    accuracy = {view: torch.full((stream.num_arrivals, stream.num_classes), math.nan, dtype=torch.float64)
                for view in VIEWS}
    curves: list[list[float]] = []
    for index in range(stream.num_arrivals):
        arrival = stream.arrival(index)
        new_x, new_y = stream.test_set(arrival.classes)
        curve: list[float] = []

        def probe(predict: Predictor, new_x: Tensor = new_x, new_y: Tensor = new_y,
                  classes: Tensor = arrival.classes, curve: list[float] = curve) -> None:
            with torch.no_grad():
                curve.append(float(per_class_accuracy(predict(new_x), new_y, classes).mean()))

        learner.learn(arrival, probe)
        curves.append(curve)
        for view, row in _score_seen(learner, stream, index + 1).items():
            accuracy[view][index] = row
    return StreamRecord(learner.name, stream.seed,
                        [stream.arrival_classes(i).tolist() for i in range(stream.num_arrivals)],
                        accuracy, curves, time.perf_counter() - start)


def interval_over_seeds(values: Sequence[float] | Tensor) -> list[float]:
    """``[mean, ci95]`` (Student-t) of one number per seed, NaN seeds left out; NaNs if none."""
    values = torch.as_tensor(values, dtype=torch.float64)
    values = values[~torch.isnan(values)]
    if values.numel() == 0:
        return [math.nan, math.nan]
    mean, ci95 = mean_and_t_ci95(values)
    return [mean, ci95]


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """``[mean, ci95]`` of ``values[i] - baseline[i]`` over seeds (Student-t interval): two
    learners' per-seed numbers on the same streams (same seeds, same order), so the variation of
    stream difficulty shared by both cancels. Seeds where either value is NaN are left out.

    Raises:
        ValueError: when the two sequences have different lengths (not the same streams).
    """
    if len(values) != len(baseline):
        raise ValueError(f"paired_difference needs one value per stream for both learners; got "
                         f"{len(values)} and {len(baseline)} values: score both on the same streams")
    return interval_over_seeds(torch.as_tensor(values, dtype=torch.float64) - torch.as_tensor(baseline, dtype=torch.float64))


def summarize_records(records: Sequence[StreamRecord], threshold: float = 0.8) -> dict:
    """Means and 95% Student-t intervals over the seeds (stream orders) of ``records`` (one learner).

    Per-seed numbers first (mean over arrivals or classes), then ``[mean, ci95]`` over seeds:
    the seen-class accuracy after each arrival (``seen_curve``), its final value, forgetting,
    new-class accuracy (mean over arrivals), the learning-speed curve (mean over arrivals of the
    probe accuracies after 0, 1, 2 ... updates), the fraction of arrivals that reached
    ``threshold`` within-task accuracy and the mean number of updates of those that did.
    """
    if not records:
        raise ValueError("summarize_records needs at least one record")
    arrival_sizes = torch.tensor([len(classes) for classes in records[0].arrival_classes])
    summary: dict = {"method": records[0].method, "seeds": [r.seed for r in records],
                     "classes_seen": arrival_sizes.cumsum(0).tolist()}
    for view in VIEWS:
        curves = torch.stack([r.seen_accuracy(view) for r in records])
        summary[view] = {
            "seen_curve": [interval_over_seeds(curves[:, t]) for t in range(curves.shape[1])],
            "final_seen_accuracy": interval_over_seeds(curves[:, -1]),
            "forgetting": interval_over_seeds([r.forgetting(view) for r in records]),
            "new_class_accuracy": interval_over_seeds([float(r.new_class_accuracy(view).mean()) for r in records]),
        }
    length = max(len(curve) for r in records for curve in r.new_class_curve)
    speed = torch.full((len(records), length), math.nan, dtype=torch.float64)
    for row, record in enumerate(records):
        padded = torch.full((len(record.new_class_curve), length), math.nan, dtype=torch.float64)
        for t, curve in enumerate(record.new_class_curve):
            padded[t, :len(curve)] = torch.tensor(curve, dtype=torch.float64)
        speed[row] = torch.nanmean(padded, dim=0)
    reached = [r.updates_to_reach(threshold) for r in records]
    summary["learning_speed"] = {
        "curve": [interval_over_seeds(speed[:, u]) for u in range(length)],
        "threshold": threshold,
        "fraction_reached": interval_over_seeds([float((~torch.isnan(u)).double().mean()) for u in reached]),
        "updates_to_threshold": interval_over_seeds([float(torch.nanmean(u)) if bool((~torch.isnan(u)).any())
                                           else math.nan for u in reached]),
    }
    summary["seconds_per_stream"] = interval_over_seeds([r.seconds for r in records])
    return summary
