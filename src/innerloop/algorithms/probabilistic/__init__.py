"""Probabilistic meta-learners: a support set becomes a predictive distribution, not a point."""

from innerloop.algorithms.probabilistic.attentive_neural_process import AttentiveNeuralProcess
from innerloop.algorithms.probabilistic.bayesian_maml import BayesianMAML
from innerloop.algorithms.probabilistic.conditional_neural_process import ConditionalNeuralProcess
from innerloop.algorithms.probabilistic.deep_kernel_transfer import DeepKernelTransfer
from innerloop.algorithms.probabilistic.neural_process import NeuralProcess
from innerloop.algorithms.probabilistic.platipus import PLATIPUS
from innerloop.algorithms.probabilistic.versa import VERSA

__all__ = ["AttentiveNeuralProcess", "BayesianMAML", "ConditionalNeuralProcess", "DeepKernelTransfer", "NeuralProcess", "PLATIPUS", "VERSA"]
