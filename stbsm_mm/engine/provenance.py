"""Provenance records: the config, data, seed and package versions of a run."""
import importlib
import json
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

    The record also copies the preprocessing parameters and the class names
    from the prepared data's ``manifest.json`` (``None`` when it is absent),
    so that ``stbsm-infer`` can preprocess a new patient's slice the same way
    once the work_dir has moved to a machine without the data.

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
    has_manifest = bool(manifest) and osp.isfile(manifest)
    manifest_content = _read_manifest(manifest) if has_manifest else {}
    record = {
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join(sys.argv),
        'config': cfg.filename,
        'config_text': cfg.pretty_text,
        'data_root': data_root,
        'split': dataset.get('split'),
        'manifest_sha256': sha256_of_file(manifest) if has_manifest else None,
        'preprocessing': manifest_content.get('preprocessing'),
        'classes': manifest_content.get('classes'),
        'seed': (cfg.get('randomness') or {}).get('seed'),
        'versions': package_versions(),
    }
    record.update(fields)
    atomic_write_json(path, record)


def _read_manifest(path: str) -> dict:
    """Return the content of a prepared data folder's ``manifest.json``."""
    with open(path, encoding='utf-8') as file:
        content = json.load(file)
    return content if isinstance(content, dict) else {}


def write_test_record(output_dir: str, cfg: Config, checkpoint: str,
                      metrics: Optional[dict]) -> None:
    """Write ``test_run.json`` for a test of ``checkpoint``."""
    write_run_record(
        osp.join(output_dir, 'test_run.json'), cfg, 'test_dataloader',
        checkpoint=osp.abspath(checkpoint),
        checkpoint_sha256=sha256_of_file(checkpoint),
        metrics=metrics)
