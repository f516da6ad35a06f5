"""Atomic file writes and checksums.

Every file the package writes goes to a temporary name in the target folder
and is renamed into place with ``os.replace``, which is atomic on POSIX and
Windows file systems: a crash leaves either the old file or the new one,
never a truncated one.
"""
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on exit.

    The temporary name keeps the suffix of ``path`` so that writers that
    choose a format from the file name (SimpleITK, OpenCV) still work. On an
    exception the temporary file is removed and ``path`` is left untouched.

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
    tmp = path.with_name(f'.{path.stem}.tmp{os.getpid()}{path.suffix}')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_writer(path) as tmp:
        tmp.write_text(text, encoding='utf-8')


def atomic_write_json(path: PathLike, content: Any) -> None:
    """Write ``content`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(content, indent=2) + '\n')


def sha256_of_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for chunk in iter(lambda: file.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()
