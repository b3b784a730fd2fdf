"""Files replaced whole: readers (and a crash) see the old file or the new one, never half.

The one way Leeward writes a file that someone else reads: credentials and ssh files, the
agent's config and records, profile files in a home, the proxy's session status, caches.
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_MARK = ".leeward-tmp-"
"""In the name of every temporary file `write_atomic` makes (`.NAME.leeward-tmp-XXXXXX`), so
that whoever watches a directory (the agent's profile sync) can pass over them."""

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_atomic(
    path: Path,
    data: bytes | str,
    *,
    mode: int = 0o644,
    modified_at: float | None = None,
    durable: bool = True,
) -> None:
    """Replace `path` with `data` (text is UTF-8): a temporary file in the same directory, its
    `mode` set before a byte is written (whatever the umask), flushed to the disk when
    `durable`, given `modified_at` (Unix seconds) if set, then renamed over `path`. A symbolic
    link at `path` is replaced, not followed. On any failure the temporary file is removed and
    `path` is as it was. The directory must exist."""
    # Here, not at the top: `leeward proxy` starts once per SSH connection and imports this
    # module: importing tempfile (with shutil) would add about 2 ms to its 80 ms start.
    import tempfile

    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        os.fchmod(fd, mode & 0o7777)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if modified_at is not None:
            os.utime(tmp, (modified_at, modified_at))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes | str, mode: int = PRIVATE_FILE) -> None:
    """`write_atomic` for secrets: readable by the owner only, in a directory created 0700 if
    it is missing."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, PRIVATE_DIR)
    write_atomic(path, data, mode=mode)
