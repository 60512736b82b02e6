"""Meta-learning methods, one file each, found by name through :data:`ALGORITHMS`."""

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.metric import TADAM, MatchingNet, MetaOptNetSVM, ProtoNet, R2D2, RelationNet, Siamese
from innerloop.algorithms.model import LEO, SNAIL, HyperNetwork, InContextTransformer, MemoryAugmentedNetwork
from innerloop.algorithms.probabilistic import (
    AttentiveNeuralProcess,
    BayesianMAML,
    ConditionalNeuralProcess,
    DeepKernelTransfer,
    NeuralProcess,
    PLATIPUS,
    VERSA,
)
from innerloop.algorithms.optimization import (
    ANIL,
    BOIL,
    CAVIA,
    MAML,
    MAMLPlusPlus,
    MetaLearnerLSTM,
    GradientLearner,
    MetaSGD,
    Reptile,
    iMAML,
)

ALGORITHMS: dict[str, type[MetaLearner]] = {
    cls.name: cls for cls in (ProtoNet, Siamese, MatchingNet, RelationNet, TADAM, R2D2, MetaOptNetSVM,
                              MemoryAugmentedNetwork, SNAIL, InContextTransformer, HyperNetwork, LEO, MAML, MAMLPlusPlus, MetaLearnerLSTM, MetaSGD, ANIL, BOIL, CAVIA, Reptile, iMAML,
                              DeepKernelTransfer, ConditionalNeuralProcess, NeuralProcess,
                              AttentiveNeuralProcess, BayesianMAML, VERSA, PLATIPUS)
}

__all__ = ["ALGORITHMS", "ANIL", "BOIL", "CAVIA", "GradientLearner", "MAML", "MAMLPlusPlus", "MetaLearner", "MetaLearnerLSTM", "MetaSGD", "ProtoNet",
           "Reptile", "iMAML", "MatchingNet", "MetaOptNetSVM", "R2D2", "RelationNet", "Siamese", "TADAM",
           "HyperNetwork", "InContextTransformer", "LEO", "MemoryAugmentedNetwork", "SNAIL",
           "DeepKernelTransfer", "ConditionalNeuralProcess", "NeuralProcess", "AttentiveNeuralProcess",
           "BayesianMAML", "VERSA", "PLATIPUS"]
