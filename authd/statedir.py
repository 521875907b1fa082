"""Directories for state (the key file, the SQLite database): every directory authd
creates on the way is 0700. `os.makedirs(mode=...)` gives the mode to the last one only;
the parents it creates get 0777 minus the umask, listable by every local user."""

from __future__ import annotations

import os


def make_private_dirs(path: str) -> None:
    """Create `path` and each missing parent 0700; directories that exist stay as they are.
    OSError when one cannot be created."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # created meanwhile (another process): not ours to chmod
            continue
        os.chmod(directory, 0o700)  # a umask such as 0o277 would narrow it further
