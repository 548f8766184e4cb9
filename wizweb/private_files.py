"""The files the server writes are readable by its own user only.

The data dir holds the database (sessions, every conversation), the secret key and the logs;
on a machine with other local users none of it is theirs to read. Settings call both functions
at import, so every process (serve, daphne, the workers, manage.py) creates files 0600 and
directories 0700, and an install made before this has its loose modes taken in at start-up.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_umask_set() -> None:
    """From now on this process and its children create files for their own user only."""
    os.umask(PRIVATE_UMASK)


def private_modes_tighten(data_dir: Path, run_dir: Path) -> None:
    """Take the group and other bits off the data dir, what it holds directly (database, secret
    key, the run, static and models dirs) and what the run dir holds (logs, configuration).

    Not recursive: model files may be hard links to a copy shared with something else. Links
    are not followed, and a path this user cannot change is left as it is."""
    paths = [data_dir, run_dir]
    for directory in (data_dir, run_dir):
        if directory.is_dir():
            paths += directory.iterdir()
    for path in paths:
        try:
            if path.is_symlink() or not path.exists():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & PRIVATE_UMASK:
                path.chmod(mode & ~PRIVATE_UMASK)
        except OSError:  # owned by someone else, or gone meanwhile: not ours to change
            continue
