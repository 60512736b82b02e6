"""Meta-learning methods, one file each, found by name through :data:`ALGORITHMS`."""

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.metric import ProtoNet
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
    cls.name: cls for cls in (ProtoNet, MAML, MAMLPlusPlus, MetaLearnerLSTM, MetaSGD, ANIL, BOIL, CAVIA, Reptile, iMAML)
}

__all__ = ["ALGORITHMS", "ANIL", "BOIL", "CAVIA", "GradientLearner", "MAML", "MAMLPlusPlus", "MetaLearner", "MetaLearnerLSTM", "MetaSGD", "ProtoNet",
           "Reptile", "iMAML"]
