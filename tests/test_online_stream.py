"""The class-stream protocol: seeded streams, what is scored when, and the derived numbers.

The synthetic coded store (tests/conftest.py) writes each image's class into pixel (0, 0), so an
oracle can read the true class and a spy can check which images it was asked about.
"""

from __future__ import annotations

import math

import pytest
import torch

from innerloop.errors import TaskError
from innerloop.online import ClassStream, StreamRecord, evaluate_stream, paired_difference, summarize_records
from innerloop.online.stream import Arrival, per_class_accuracy


def store_class(images: torch.Tensor) -> torch.Tensor:
    return (images[:, 0, 0, 0] * 255).round().long()


class Oracle:
    """Reads each image's class from its pixels and never changes: perfect, no forgetting."""

    name = "oracle"

    def __init__(self, stream: ClassStream) -> None:
        self.stream_label = {int(c): label for label, c in enumerate(stream.store_classes)}
        self.calls: list[tuple[int, list[int], list[int]]] = []  # (arrivals learned, classes, image labels)
        self.learned = 0

    def start_stream(self, num_classes: int, seed: int) -> None:
        self.learned = 0

    def learn(self, arrival: Arrival, probe=None) -> None:
        self.learned += 1
        if probe is not None:
            probe(lambda images: self.logits(images, arrival.classes))

    def logits(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        labels = torch.tensor([self.stream_label[int(c)] for c in store_class(images)])
        self.calls.append((self.learned, classes.tolist(), labels.tolist()))
        return (labels.unsqueeze(1) == classes.unsqueeze(0)).double()


class FixedRandom:
    """A fixed random linear scorer: it never learns, so nothing it knows can be forgotten."""

    name = "fixed"

    def __init__(self, num_classes: int, features: int) -> None:
        self.weight = torch.randn(num_classes, features, generator=torch.Generator().manual_seed(0))

    def start_stream(self, num_classes: int, seed: int) -> None:
        pass

    def learn(self, arrival: Arrival, probe=None) -> None:
        pass

    def logits(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight[classes].T


def test_same_seed_same_stream_other_seed_other_order(coded_split):
    first = ClassStream(coded_split, 20, train_shots=5, test_shots=15, classes_per_arrival=5, seed=3)
    again = ClassStream(coded_split, 20, train_shots=5, test_shots=15, classes_per_arrival=5, seed=3)
    other = ClassStream(coded_split, 20, train_shots=5, test_shots=15, classes_per_arrival=5, seed=4)
    assert torch.equal(first.split_class_ids, again.split_class_ids)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_x, again.test_x)
    assert not torch.equal(first.split_class_ids, other.split_class_ids)
    assert len(set(first.split_class_ids.tolist())) == 20  # distinct classes


def test_training_and_held_out_images_are_distinct_and_class_by_class(coded_split):
    stream = ClassStream(coded_split, 10, train_shots=5, test_shots=15, classes_per_arrival=2, seed=0)
    assert stream.num_arrivals == 5
    for label in range(10):
        rows = stream.rows[label]
        assert len(set(rows.tolist())) == 20  # 5 training + 15 held-out, all different drawings
    arrival = stream.arrival(1)
    assert arrival.classes.tolist() == [2, 3]
    assert arrival.train_y.tolist() == [2] * 5 + [3] * 5  # one class after the other
    assert store_class(arrival.train_x).tolist() == [int(stream.store_classes[2])] * 5 + [int(stream.store_classes[3])] * 5
    images, labels = stream.test_set(torch.tensor([7]))
    assert labels.tolist() == [7] * 15 and set(store_class(images).tolist()) == {int(stream.store_classes[7])}


def test_impossible_streams_are_refused(coded_split):
    with pytest.raises(TaskError, match="divide num_classes"):
        ClassStream(coded_split, 10, classes_per_arrival=3)
    with pytest.raises(TaskError, match="51-way"):
        ClassStream(coded_split, 51, classes_per_arrival=1)
    with pytest.raises(TaskError, match="test_shots must be >= 1"):
        ClassStream(coded_split, 10, train_shots=5, test_shots=0)


def test_only_seen_classes_are_offered_and_scored(coded_split):
    stream = ClassStream(coded_split, 12, train_shots=2, test_shots=3, classes_per_arrival=3, seed=1)
    oracle = Oracle(stream)
    record = evaluate_stream(oracle, stream)
    for learned, classes, labels in oracle.calls:
        seen = learned * 3
        assert max(classes) < seen and set(labels) <= set(classes)
    # after arrival t exactly the 3(t+1) seen classes have a score, each 1.0 for the oracle
    for t in range(4):
        for view in ("all_seen", "within_task"):
            row = record.accuracy[view][t]
            assert (~torch.isnan(row)).sum() == 3 * (t + 1)
            assert torch.all(row[: 3 * (t + 1)] == 1.0)
    assert record.forgetting("all_seen") == 0.0 and record.forgetting("within_task") == 0.0
    assert record.new_class_curve == [[1.0]] * 4


def test_a_learner_that_never_changes_forgets_nothing_within_its_tasks(coded_split):
    stream = ClassStream(coded_split, 20, train_shots=5, test_shots=15, classes_per_arrival=4, seed=2)
    record = evaluate_stream(FixedRandom(20, 16), stream)
    assert record.forgetting("within_task") == 0.0
    within = record.accuracy["within_task"]
    for c in range(20):  # each class keeps the score it had when it arrived
        scores = within[:, c][~torch.isnan(within[:, c])]
        assert torch.all(scores == scores[0])


def test_derived_numbers_from_a_hand_made_matrix():
    nan = math.nan
    matrix = torch.tensor([[0.8, nan, nan],
                           [0.6, 1.0, nan],
                           [0.7, 0.5, 0.9]], dtype=torch.float64)
    record = StreamRecord("hand", 0, [[0], [1], [2]], {"all_seen": matrix, "within_task": matrix},
                          [[0.0, 0.5, 0.9], [0.2, 0.4, 0.6], [1.0]])
    assert record.seen_accuracy("all_seen").tolist() == pytest.approx([0.8, 0.8, 0.7])
    assert record.new_class_accuracy("all_seen").tolist() == pytest.approx([0.8, 1.0, 0.9])
    # class 0: best 0.8, final 0.7; class 1: best 1.0, final 0.5; class 2 (last arrival) left out
    assert record.forgetting("all_seen") == pytest.approx((0.1 + 0.5) / 2)
    reached = record.updates_to_reach(0.8)
    assert reached[0] == 2 and math.isnan(reached[1]) and reached[2] == 0
    other = StreamRecord("hand", 1, [[0], [1], [2]], {"all_seen": matrix - 0.1, "within_task": matrix},
                         [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    summary = summarize_records([record, other], threshold=0.8)
    assert summary["classes_seen"] == [1, 2, 3]
    # Student-t over 2 stream orders: std 0.0707 / sqrt(2) = 0.05, times t_{0.975,1} = 12.706
    assert summary["all_seen"]["final_seen_accuracy"] == pytest.approx([0.65, 12.706 * 0.05])
    assert summary["learning_speed"]["fraction_reached"][0] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["learning_speed"]["curve"][0][0] == pytest.approx((0.4 + 0.0) / 2)


def test_per_class_accuracy_maps_columns_to_the_offered_classes():
    classes = torch.tensor([4, 9])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([4, 9, 4, 9])
    assert per_class_accuracy(logits, labels, classes).tolist() == [0.5, 0.5]


def test_paired_difference_is_the_t_interval_of_per_seed_differences():
    # differences 0.1, 0.3, 0.2: mean 0.2, std 0.1, half-width t_{0.975,2} * 0.1 / sqrt(3)
    mean, ci95 = paired_difference([0.5, 0.7, 0.6], [0.4, 0.4, 0.4])
    assert mean == pytest.approx(0.2) and ci95 == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    # a shift shared by both learners on a stream cancels: identical differences, zero width
    assert paired_difference([0.9, 0.2, 0.5], [0.8, 0.1, 0.4]) == pytest.approx([0.1, 0.0])
    with pytest.raises(ValueError, match="same streams"):
        paired_difference([0.5, 0.7], [0.4])
