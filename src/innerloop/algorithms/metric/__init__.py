"""Metric-based meta-learners: the inner loop is a closed form over support embeddings."""

from innerloop.algorithms.metric.matching import MatchingNet
from innerloop.algorithms.metric.metaoptnet import MetaOptNetSVM
from innerloop.algorithms.metric.protonet import ProtoNet
from innerloop.algorithms.metric.r2d2 import R2D2
from innerloop.algorithms.metric.relation import RelationNet
from innerloop.algorithms.metric.siamese import Siamese
from innerloop.algorithms.metric.tadam import TADAM

__all__ = ["MatchingNet", "MetaOptNetSVM", "ProtoNet", "R2D2", "RelationNet", "Siamese", "TADAM"]
