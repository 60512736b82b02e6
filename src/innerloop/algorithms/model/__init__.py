"""Model-based meta-learners: adaptation is a forward pass of a network that reads the support set."""

from innerloop.algorithms.model.hypernetwork import HyperNetwork
from innerloop.algorithms.model.in_context_transformer import InContextTransformer
from innerloop.algorithms.model.leo import LEO
from innerloop.algorithms.model.mann import MemoryAugmentedNetwork
from innerloop.algorithms.model.snail import SNAIL

__all__ = ["HyperNetwork", "InContextTransformer", "LEO", "MemoryAugmentedNetwork", "SNAIL"]
