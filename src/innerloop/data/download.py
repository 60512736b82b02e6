"""Fetching dataset files from their published sources into the data root.

Files are streamed to a hidden ``.part`` file beside the target and renamed into place only when
complete (and, where a checksum is known, when it matches), so an interrupted download never
leaves a truncated file that a later run would take for the real one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.request
from pathlib import Path


class DownloadFailed(Exception):
    """A download that did not produce the file; the message says why (for the caller's error)."""


def fetch(url: str, target: Path, md5: str | None = None, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``target`` (checking ``md5`` when given); raise :class:`DownloadFailed`."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")  # ranks of one run may fetch at once
    print(f"innerloop: downloading {url} to {target.parent}", file=sys.stderr)
    digest = hashlib.md5()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, short reads, disk
        partial.unlink(missing_ok=True)
        raise DownloadFailed(f"download of {url} failed ({error}).") from None
    if md5 is not None and digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        raise DownloadFailed(f"{url} gave md5 {digest.hexdigest()}, expected {md5}.")
    partial.replace(target)
    return target
