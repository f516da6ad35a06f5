"""Load checkpoints safely: full unpickling only for this project's own files.

PyTorch 2.6 and later load checkpoints with ``weights_only=True`` by default,
which accepts tensors and plain containers but not the Python objects that
MMEngine stores for resuming (message hub, NumPy arrays). MMEngine 0.10.7
calls ``torch.load`` without the argument, so its own checkpoints fail to
load. This module replaces MMEngine's loader for local files:

* a checkpoint whose SHA-256 is recorded in ``checkpoint_sha256.json`` in its
  own folder was written by :class:`~stbsm_mm.engine.STBSMRunner` and is
  loaded fully (``weights_only=False``);
* any other file (pretrained weights, a colleague's checkpoint) is loaded
  with ``weights_only=True``; objects that could run code are rejected.
"""
import json
import os
import pickle
from pathlib import Path
from typing import Union

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.fileio import atomic_write_json, sha256_of_file

PathLike = Union[str, Path]

TRUST_RECORD = 'checkpoint_sha256.json'


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint needs full unpickling but its hash is not recorded."""


def record_trusted_checkpoint(path: PathLike) -> str:
    """Record the SHA-256 of a checkpoint this project wrote; return it."""
    path = Path(path)
    record_path = path.parent / TRUST_RECORD
    record = {}
    if record_path.is_file():
        record = json.loads(record_path.read_text())
    digest = sha256_of_file(path)
    record[path.name] = digest
    # Drop the entries of checkpoints that CheckpointHook has deleted since.
    record = {name: value for name, value in record.items()
              if (path.parent / name).is_file()}
    atomic_write_json(record_path, record)
    return digest


def prune_trust_record(folder: PathLike) -> None:
    """Remove entries of deleted checkpoints from ``folder``'s record."""
    record_path = Path(folder) / TRUST_RECORD
    if not record_path.is_file():
        return
    record = json.loads(record_path.read_text())
    kept = {name: value for name, value in record.items()
            if (Path(folder) / name).is_file()}
    if kept != record:
        atomic_write_json(record_path, kept)


def is_trusted_checkpoint(path: PathLike) -> bool:
    """Return True if the file's SHA-256 matches the record in its folder."""
    path = Path(path)
    record_path = path.parent / TRUST_RECORD
    if not record_path.is_file():
        return False
    try:
        recorded = json.loads(record_path.read_text()).get(path.name)
    except ValueError:
        return False
    return recorded is not None and recorded == sha256_of_file(path)


def load_checkpoint_file(filename: PathLike, map_location=None):
    """Load a local checkpoint, fully only if its hash is recorded.

    Args:
        filename: Path of a ``.pth`` file.
        map_location: As in :func:`torch.load`.

    Returns:
        The loaded object (usually a dict).

    Raises:
        FileNotFoundError: no such file.
        UntrustedCheckpointError: the file is not recorded and contains
            objects that ``weights_only`` loading rejects.
    """
    filename = os.path.expanduser(str(filename))
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename}: checkpoint not found.')
    if is_trusted_checkpoint(filename):
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as error:
        raise UntrustedCheckpointError(
            f'{filename}: this checkpoint contains Python objects that '
            'weights-only loading rejects, and its SHA-256 is not recorded in '
            f'{Path(filename).parent / TRUST_RECORD} (the record that '
            'stbsm-mm training writes). Loading it fully could run code from '
            'the file. If you trust where it came from, record it with '
            f'`python tools/trust_checkpoint.py {filename}`, or pass a file '
            'that contains only a state_dict.') from error


# MMEngine picks the loader by the longest matching path prefix; the empty
# prefix is its fallback for local files, which this replaces.
CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file,
                                 force=True)
