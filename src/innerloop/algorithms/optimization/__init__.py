"""Optimization-based meta-learners: the inner loop is gradient descent (see innerloop.functional)."""

from innerloop.algorithms.optimization.anil import ANIL
from innerloop.algorithms.optimization.boil import BOIL
from innerloop.algorithms.optimization.cavia import CAVIA
from innerloop.algorithms.optimization.gradient_learner import AdaptedState, GradientLearner
from innerloop.algorithms.optimization.imaml import iMAML
from innerloop.algorithms.optimization.maml import MAML
from innerloop.algorithms.optimization.lstm_optimizer import LSTMOptimizer, preprocess_gradients
from innerloop.algorithms.optimization.maml_plus_plus import MAMLPlusPlus
from innerloop.algorithms.optimization.meta_learner_lstm import MetaLearnerLSTM
from innerloop.algorithms.optimization.meta_sgd import MetaSGD
from innerloop.algorithms.optimization.reptile import Reptile

__all__ = ["ANIL", "BOIL", "CAVIA", "AdaptedState", "GradientLearner", "LSTMOptimizer", "MAML", "MAMLPlusPlus",
           "MetaLearnerLSTM", "MetaSGD", "Reptile", "iMAML", "preprocess_gradients"]
