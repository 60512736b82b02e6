"""User-facing errors.

Every error a user can cause by a bad config, missing data or an impossible request derives from
:class:`InnerloopError`. The command line prints these as one plain message (no traceback) and
exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InnerloopError(Exception):
    """Base class of errors that tell the user what to change."""


class ConfigError(InnerloopError):
    """A config key is unknown, mistyped or has an impossible value."""


class DataError(InnerloopError):
    """A dataset is missing, corrupt or laid out differently from what the loader expects."""


class TaskError(InnerloopError):
    """An episode request cannot be served by the dataset (too many ways, shots or queries)."""


class TrainingDiverged(InnerloopError):
    """The meta-loss became non-finite; the last good checkpoint is kept."""


class MissingExtraError(InnerloopError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
