"""A node-local cache of parsed, validated COCO annotation files.

COCO 2017's ``instances_train2017.json`` is 450 MB: every DDP rank of every trial parsing it again
(and again after each worker-group restart) costs tens of seconds and gigabytes per process. The
first process on a node to read a file stores what it parsed; the others, later trials and
restarted attempts load that instead. The key is the file's absolute path, size and modification
time and a hash of its first and last MiB, so an edited file is parsed again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drkd.data.atomic_file import atomic_write_bytes

log = logging.getLogger("drkd.data")

CACHE_ENV = "DRKD_CACHE_DIR"  # where the cache lives (node-local, not shared)
FORMAT_VERSION = 1  # bump when what `parse` returns changes
_EDGE = 1 << 20


def cache_dir() -> Path:
    """``$DRKD_CACHE_DIR/annotations``, default ``~/.cache/drkd_annotations``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) / "annotations" if env else Path.home() / ".cache" / "drkd_annotations"


def cached_parse(path: Path, parse: Callable[[Path], Any]) -> Any:
    """``parse(path)``, or what it returned for the same file before on this node.

    Args:
        path: the annotation file; it must exist (``parse`` reports a missing one as it likes).
        parse: reads and validates the file; its result must pickle. Errors it raises are not cached.

    A cache that cannot be written (read-only home) only costs the parse, with a warning.
    """
    try:
        stat = path.stat()
    except OSError:
        return parse(path)
    key = hashlib.sha1(f"{FORMAT_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    # and the file's first and last MiB: mtime ticks coarsely, so a same-size rewrite within one tick
    # still changes the key (reading 2 MiB costs nothing beside parsing the file)
    with open(path, "rb") as f:
        key.update(f.read(_EDGE))
        f.seek(max(0, stat.st_size - _EDGE))
        key.update(f.read(_EDGE))
    entry = cache_dir() / f"{key.hexdigest()}.pkl"
    try:
        with open(entry, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        pass
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        log.warning("%s: unreadable annotation cache entry (%s); parsing %s again", entry, err, path)
    value = parse(path)
    try:
        atomic_write_bytes(entry, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as err:
        log.warning("cannot cache the parsed %s in %s (%s): every process parses it", path, entry.parent, err)
    return value
