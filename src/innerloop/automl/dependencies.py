"""scikit-learn, imported only when an AutoML function needs it.

``innerloop.automl`` imports without scikit-learn (the search orders, nearest-dataset retrieval
and trajectory measures are numpy); the datasets, meta-features and evaluated models need it,
and ask for it through :func:`require_sklearn`, which names the extra to install.
"""

from __future__ import annotations

from types import ModuleType

from innerloop.errors import MissingExtraError

AUTOML_EXTRA_HINT = "pip install 'innerloop[automl]'"


def require_sklearn() -> ModuleType:
    """The ``sklearn`` module, or :class:`MissingExtraError` naming the ``automl`` extra."""
    try:
        import sklearn
    except ImportError as error:
        raise MissingExtraError(f"innerloop.automl needs scikit-learn: {AUTOML_EXTRA_HINT} ({error})") from error
    return sklearn
