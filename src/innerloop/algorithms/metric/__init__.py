"""Metric-based meta-learners: the inner loop is a closed form over support embeddings."""

from innerloop.algorithms.metric.protonet import ProtoNet

__all__ = ["ProtoNet"]
