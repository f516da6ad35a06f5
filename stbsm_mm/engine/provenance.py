"""What produced a result: config, checkpoint, seed and package versions."""
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
    """Return the versions of the packages that shape results."""
    import importlib

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


def write_test_record(output_dir: str, cfg: Config, checkpoint: str,
                      metrics: Optional[dict]) -> None:
    """Write ``test_run.json``: the inputs and environment of a test run."""
    dataset = cfg.test_dataloader.dataset
    atomic_write_json(
        osp.join(output_dir, 'test_run.json'), {
            'created': datetime.now(timezone.utc).isoformat(
                timespec='seconds'),
            'command': ' '.join(sys.argv),
            'config': cfg.filename,
            'config_text': cfg.pretty_text,
            'checkpoint': osp.abspath(checkpoint),
            'checkpoint_sha256': sha256_of_file(checkpoint),
            'data_root': dataset.get('data_root'),
            'split': dataset.get('split'),
            'seed': (cfg.get('randomness') or {}).get('seed'),
            'versions': package_versions(),
            'metrics': metrics,
        })
