"""T2CropDataset keeps decoded crops in memory without changing samples."""
import shutil

import numpy as np
import pytest
from mmengine.config import Config

import stbsm_mm  # noqa: F401  (registers the dataset and transforms)
from stbsm_mm.datasets import T2CropDataset

from conftest import REPO_ROOT


def _pipelines():
    cfg = Config.fromfile(REPO_ROOT / 'configs/stbsm/resnet34_stbsm.py')
    return cfg.train_pipeline, cfg.test_pipeline


def _dataset(data_root, pipeline, **kwargs):
    return T2CropDataset(data_root=str(data_root), split='val',
                         pipeline=pipeline, **kwargs)


@pytest.fixture(scope='module')
def data_root(spider_prepared, tmp_path_factory):
    # A copy, so that a test may remove crop files.
    root = tmp_path_factory.mktemp('memory') / 'prepared'
    shutil.copytree(spider_prepared, root)
    return root


def test_memory_same_test_samples(data_root):
    _, test_pipeline = _pipelines()
    cached = _dataset(data_root, test_pipeline)
    from_disk = _dataset(data_root, test_pipeline, in_memory=False)

    assert cached._decoded is not None
    assert from_disk._decoded is None
    assert len(cached) == len(from_disk)
    for idx in range(len(cached)):
        a = cached[idx]
        b = from_disk[idx]
        assert a['data_samples'].roi_id == b['data_samples'].roi_id
        assert a['data_samples'].img_path == b['data_samples'].img_path
        assert np.array_equal(a['inputs'].numpy(), b['inputs'].numpy())


def test_memory_same_augmented_samples(data_root):
    train_pipeline, _ = _pipelines()
    cached = _dataset(data_root, train_pipeline)
    from_disk = _dataset(data_root, train_pipeline, in_memory=False)

    np.random.seed(3)
    first = [cached[idx]['inputs'].numpy() for idx in range(4)]
    np.random.seed(3)
    second = [from_disk[idx]['inputs'].numpy() for idx in range(4)]
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_memory_crop_unchanged_by_pipeline(data_root):
    train_pipeline, _ = _pipelines()
    dataset = _dataset(data_root, train_pipeline)
    before = dataset._decoded[0]['img'].copy()
    for _ in range(3):
        dataset[0]
    assert np.array_equal(dataset._decoded[0]['img'], before)


def test_memory_reads_no_file(data_root):
    _, test_pipeline = _pipelines()
    dataset = _dataset(data_root, test_pipeline, in_memory=True)
    crop = dataset.get_data_info(0)['img_path']
    moved = crop + '.moved'
    shutil.move(crop, moved)
    try:
        sample = dataset[0]
        assert sample['inputs'].shape[0] == 3
        with pytest.raises(FileNotFoundError):
            _dataset(data_root, test_pipeline, in_memory=False)[0]
    finally:
        shutil.move(moved, crop)


def test_memory_limit_falls_back(data_root):
    _, test_pipeline = _pipelines()
    dataset = _dataset(data_root, test_pipeline, memory_limit_mb=0.001)
    assert dataset._decoded is None
    assert dataset[0]['inputs'].shape[0] == 3


def test_memory_forced_ignores_limit(data_root):
    _, test_pipeline = _pipelines()
    dataset = _dataset(data_root, test_pipeline, in_memory=True,
                       memory_limit_mb=0.001)
    assert dataset._decoded is not None
    assert len(dataset._decoded) == len(dataset)
