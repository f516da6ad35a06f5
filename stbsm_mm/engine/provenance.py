"""Provenance records: the config, data, seed and package versions of a run."""
import importlib
import os.path as osp
import platform
import sys
from datetime import datetime, timezone
from typing import Optional

from mmengine.config import Config

from ..utils.fileio import atomic_write_json, sha256_of_file

PACKAGES = ('stbsm_mm', 'torch', 'torchvision', 'mmpretrain', 'mmengine',
            'mmcv', 'SimpleITK', 'sklearn', 'numpy', 'pydicom')


def package_versions() -> dict:
    """Return the versions of Python and of the packages that shape results."""
    versions = {'python': platform.python_version()}
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        version = getattr(module, '__version__', None)
        if name == 'SimpleITK':
            version = module.Version.VersionString()
        versions[name] = str(version)
    return versions


def write_run_record(path: str, cfg: Config, dataloader: str,
                     **fields) -> None:
    """Write a JSON record of a run: command, config, data, seed, versions.

    Args:
        path: The JSON file to write.
        cfg: The run's config.
        dataloader: Name of the dataloader whose data root and split are
            recorded (``'train_dataloader'`` or ``'test_dataloader'``).
        **fields: Further entries (checkpoint, metrics, ...).
    """
    dataset = cfg.get(dataloader, {}).get('dataset', {})
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    data_root = dataset.get('data_root')
    manifest = osp.join(data_root, 'manifest.json') if data_root else None
    record = {
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join(sys.argv),
        'config': cfg.filename,
        'config_text': cfg.pretty_text,
        'data_root': data_root,
        'split': dataset.get('split'),
        'manifest_sha256': sha256_of_file(manifest)
        if manifest and osp.isfile(manifest) else None,
        'seed': (cfg.get('randomness') or {}).get('seed'),
        'versions': package_versions(),
    }
    record.update(fields)
    atomic_write_json(path, record)


def write_test_record(output_dir: str, cfg: Config, checkpoint: str,
                      metrics: Optional[dict]) -> None:
    """Write ``test_run.json`` for a test of ``checkpoint``."""
    write_run_record(
        osp.join(output_dir, 'test_run.json'), cfg, 'test_dataloader',
        checkpoint=osp.abspath(checkpoint),
        checkpoint_sha256=sha256_of_file(checkpoint),
        metrics=metrics)
