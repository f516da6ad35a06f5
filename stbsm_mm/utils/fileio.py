"""Atomic file writes and checksums.

Every file the package writes goes to a temporary name in the target folder
and is renamed into place with ``os.replace``, which is atomic on POSIX and
Windows file systems. A crash therefore leaves either the old file or the
new one, never a truncated one.
"""
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on exit.

    The temporary name keeps the suffix of ``path`` so that writers that
    choose a format from the file name (SimpleITK, OpenCV) still work. The
    file is flushed to disk before the rename. On an exception the
    temporary file is removed and ``path`` is left untouched.

    Examples:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), 'crop.txt')
        >>> with atomic_writer(target) as tmp:
        ...     _ = tmp.write_text('done')
        >>> open(target).read()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent,
                                        prefix=f'.{path.stem}.',
                                        suffix=f'.tmp{path.suffix}')
    os.close(descriptor)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, 'rb') as file:
            os.fsync(file.fileno())
        # mkstemp creates the file with mode 0600; results are 0644.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def open_atomic(path: PathLike,
                newline: Optional[str] = None) -> Iterator[IO[str]]:
    """Open a UTF-8 text file for writing that replaces ``path`` on exit."""
    with atomic_writer(path) as tmp:
        with open(tmp, 'w', encoding='utf-8', newline=newline) as file:
            yield file


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with open_atomic(path) as file:
        file.write(text)


def atomic_write_json(path: PathLike, content: Any) -> None:
    """Write ``content`` as indented JSON to ``path`` atomically.

    NaN and infinity are rejected: undefined figures must be ``None``.
    """
    atomic_write_text(path, json.dumps(content, indent=2,
                                       allow_nan=False) + '\n')


def sha256_of_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for chunk in iter(lambda: file.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()
