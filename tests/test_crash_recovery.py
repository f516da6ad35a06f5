"""SIGKILL during preparation and training loses no finished work."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import DEMO_EXTERNAL_SITE, REPO_ROOT, run_tool
from stbsm_mm.utils import sha256_of_file


def start(*args):
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_when(process, condition, timeout=300):
    """SIGKILL the process group as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail('the process ended before it could be killed')
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail('the kill condition never held')
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def finished_entries(cache):
    # A kill can leave a hidden ".<key>.<random>.tmp.json" of an entry that
    # was being written; the re-run removes it.
    return [path for path in cache.glob('*.json')
            if not path.name.startswith('.')]


def crop_checksums(folder):
    return {path.name: sha256_of_file(path)
            for path in sorted((folder / 'crops').glob('*.png'))}


@pytest.mark.parametrize('finished_slices', [1, 6])
def test_prepare_killed_and_rerun(demo_cohort, spider_prepared, tmp_path,
                                  finished_slices):
    out_dir = tmp_path / 'prepared'
    process = start('tools/prepare_data.py', demo_cohort, out_dir,
                    '--external-sites', DEMO_EXTERNAL_SITE, '--workers', 1,
                    '--no-progress')
    cache = out_dir / 'cache'
    kill_when(process, lambda: cache.is_dir() and len(
        finished_entries(cache)) >= finished_slices)
    assert not (out_dir / 'manifest.json').exists()
    done_before = len(finished_entries(cache))

    result = run_tool('tools/prepare_data.py', demo_cohort, out_dir,
                      '--external-sites', DEMO_EXTERNAL_SITE,
                      '--no-progress')
    assert f'{done_before} unchanged (reused)' in result.output
    assert crop_checksums(out_dir) == crop_checksums(spider_prepared)
    assert not list(out_dir.rglob('*.tmp*'))


def test_training_killed_and_resumed(spider_prepared, tmp_path):
    work_dir = tmp_path / 'work'
    options = [
        f'data_root={spider_prepared}', 'train_cfg.max_epochs=3',
        'train_dataloader.dataset.times=1',
        'train_dataloader.dataset.dataset.indices=16',
        'train_dataloader.batch_size=8', 'val_dataloader.batch_size=16',
        'default_hooks.checkpoint.interval=1'
    ]
    process = start('tools/train.py', 'configs/stbsm/resnet34_stbsm.py',
                    '--work-dir', work_dir, '--cfg-options', *options)
    kill_when(process, lambda: (work_dir / 'epoch_1.pth').is_file())
    assert not list(work_dir.glob('.*.tmp*'))

    result = run_tool('tools/train.py', 'configs/stbsm/resnet34_stbsm.py',
                      '--work-dir', work_dir, '--resume', '--cfg-options',
                      *options)
    assert 'Auto resumed from the latest checkpoint' in result.output
    assert 'Epoch(train) [3]' in result.output
    assert (work_dir / 'epoch_3.pth').is_file()

    run_tool('tools/test.py', 'configs/stbsm/resnet34_stbsm_external.py',
             work_dir / 'epoch_3.pth', '--cfg-options',
             f'data_root={spider_prepared}')
    assert (work_dir / 'external' / 'metrics.json').is_file()
