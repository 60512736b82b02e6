"""Probabilistic meta-learners: a support set becomes a predictive distribution, not a point."""

from innerloop.algorithms.probabilistic.deep_kernel_transfer import DeepKernelTransfer

__all__ = ["DeepKernelTransfer"]
