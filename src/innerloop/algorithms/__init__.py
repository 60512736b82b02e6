"""Meta-learning methods, one file each, found by name through :data:`ALGORITHMS`."""

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.metric import ProtoNet

ALGORITHMS: dict[str, type[MetaLearner]] = {ProtoNet.name: ProtoNet}

__all__ = ["ALGORITHMS", "MetaLearner", "ProtoNet"]
