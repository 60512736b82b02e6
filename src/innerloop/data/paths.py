"""Where datasets and decoded caches live.

The data root is chosen, in order, by an explicit argument (``--data-root`` on the command line,
``data.root`` in a config), the ``INNERLOOP_DATA`` environment variable, or a folder in the user
cache (``$XDG_CACHE_HOME/innerloop/data``, by default ``~/.cache/innerloop/data``). Each dataset
sits in a sub-folder named after it (``<root>/omniglot/images_background.zip``).

Decoded tensor stores are cached under ``INNERLOOP_CACHE`` if set, else
``$XDG_CACHE_HOME/innerloop/stores``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "innerloop"


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``explicit``, else ``$INNERLOOP_DATA``, else the user cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("INNERLOOP_DATA")
    if from_env:
        return Path(from_env).expanduser()
    return _user_cache() / "data"


def store_cache_dir() -> Path:
    """Folder for decoded tensor stores (``$INNERLOOP_CACHE`` or the user cache)."""
    from_env = os.environ.get("INNERLOOP_CACHE")
    if from_env:
        return Path(from_env).expanduser()
    return _user_cache() / "stores"
