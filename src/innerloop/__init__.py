"""innerloop: meta-learning ("learning to learn") in PyTorch.

Layers, bottom to top: ``data`` (tensor stores of real datasets), ``tasks`` (episodes),
``nn`` (backbones), ``algorithms`` (one file per method, all implementing
:class:`~innerloop.algorithms.MetaLearner`), ``train`` (the outer loop), ``evaluate`` (the
protocol and reports), ``cli``.
"""

__version__ = "0.1.0"
