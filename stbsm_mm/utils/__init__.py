"""Small helpers shared by the package: atomic file writes and checksums."""
from .fileio import (atomic_write_json, atomic_write_text, atomic_writer,
                     sha256_of_file)

__all__ = [
    'atomic_write_json', 'atomic_write_text', 'atomic_writer',
    'sha256_of_file'
]
