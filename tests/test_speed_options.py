"""Mixed precision, channels-last and pinned-memory settings of a run."""
import json
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import stbsm_mm  # noqa: F401  (registers modules)
from stbsm_mm.engine import STBSMRunner, prepare_run_config
from stbsm_mm.engine.speed import apply_speed_options, retain_freed_memory

from conftest import REPO_ROOT, run_tool

CONFIG = REPO_ROOT / 'configs/stbsm/resnet34_stbsm.py'


def _config(**options) -> Config:
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(options)
    return cfg


@pytest.mark.parametrize('amp, dtype', [('bf16', 'bfloat16'),
                                        ('fp16', 'float16')])
def test_amp_sets_optim_wrapper(amp, dtype):
    cfg = _config(amp=amp)
    apply_speed_options(cfg, cuda_available=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == dtype
    # The rest of the optimizer settings stay.
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.clip_grad.max_norm == 5.0


def test_amp_without_cuda_rejected():
    cfg = _config(amp='bf16')
    with pytest.raises(ValueError, match='needs a CUDA GPU'):
        apply_speed_options(cfg, cuda_available=False)


def test_amp_invalid_value_rejected():
    cfg = _config(amp='int8')
    with pytest.raises(ValueError, match="amp='int8'"):
        apply_speed_options(cfg, cuda_available=True)


def test_amp_off_keeps_optim_wrapper():
    cfg = _config()
    wrapper_type = cfg.optim_wrapper.get('type')
    apply_speed_options(cfg, cuda_available=True)
    assert cfg.optim_wrapper.get('type') == wrapper_type
    assert 'dtype' not in cfg.optim_wrapper


@pytest.mark.parametrize('cuda', [True, False])
def test_pin_memory_follows_cuda(cuda):
    cfg = _config()
    apply_speed_options(cfg, cuda_available=cuda)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[name].pin_memory is cuda


def test_pin_memory_explicit_kept():
    cfg = _config(pin_memory=True)
    cfg.val_dataloader.pin_memory = False
    apply_speed_options(cfg, cuda_available=False)
    assert cfg.train_dataloader.pin_memory is True
    assert cfg.val_dataloader.pin_memory is False


def test_channels_last_model(tmp_path):
    cfg = _config(channels_last=True)
    cfg.work_dir = str(tmp_path)
    prepare_run_config(cfg)
    runner = STBSMRunner.from_cfg(cfg)
    weight = runner.model.backbone.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()


def test_channels_last_default_off(tmp_path):
    cfg = _config()
    cfg.work_dir = str(tmp_path)
    prepare_run_config(cfg)
    runner = STBSMRunner.from_cfg(cfg)
    assert runner.model.backbone.conv1.weight.is_contiguous()


def test_channels_last_trains(spider_prepared, tmp_path):
    work_dir = tmp_path / 'work'
    run_tool('tools/train.py', CONFIG, '--work-dir', work_dir,
             '--cfg-options', f'data_root={spider_prepared}',
             'channels_last=True', 'train_cfg.max_epochs=1',
             'train_dataloader.dataset.times=1',
             'train_dataloader.batch_size=16', 'train_dataloader.num_workers=0',
             'train_dataloader.persistent_workers=False',
             'val_dataloader.num_workers=0',
             'val_dataloader.persistent_workers=False')
    assert (work_dir / 'epoch_1.pth').is_file()
    metrics = json.loads((work_dir / 'val' / 'metrics.json').read_text())
    assert metrics['n_images'] > 0


def test_amp_needs_plain_wrapper():
    cfg = _config(amp='fp16')
    cfg.optim_wrapper.type = 'ApexOptimWrapper'
    with pytest.raises(ValueError, match='ApexOptimWrapper'):
        apply_speed_options(cfg, cuda_available=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU error')
def test_train_amp_on_cpu_rejected(tmp_path):
    result = run_tool('tools/train.py', CONFIG, '--amp', 'bf16',
                      '--work-dir', tmp_path / 'work', expect_ok=False,
                      timeout=300)
    assert result.returncode != 0
    assert "error: amp='bf16' needs a CUDA GPU" in result.output
    assert 'Traceback' not in result.output
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_auto_workers_on_cuda(monkeypatch):
    monkeypatch.setattr('os.cpu_count', lambda: 16)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    cfg = _config()
    apply_speed_options(cfg, cuda_available=True)
    assert cfg.train_dataloader.num_workers == 8

    monkeypatch.setenv('LOCAL_WORLD_SIZE', '4')
    cfg = _config()
    apply_speed_options(cfg, cuda_available=True)
    assert cfg.train_dataloader.num_workers == 4


def test_auto_workers_keeps_cpu_and_opt_out(monkeypatch):
    monkeypatch.setattr('os.cpu_count', lambda: 16)
    cfg = _config()
    configured = cfg.train_dataloader.num_workers
    apply_speed_options(cfg, cuda_available=False)
    assert cfg.train_dataloader.num_workers == configured

    cfg = _config(auto_workers=False)
    apply_speed_options(cfg, cuda_available=True)
    assert cfg.train_dataloader.num_workers == configured


def _flushes_denormals() -> bool:
    # A subnormal float64 reads back as 0 while flushing is on.
    return torch.tensor([1e-323], dtype=torch.float64)[0].item() == 0


@pytest.mark.parametrize('flush', [True, False])
def test_flush_denormal_setting(tmp_path, flush):
    cfg = _config(flush_denormal=flush)
    cfg.work_dir = str(tmp_path)
    prepare_run_config(cfg)
    torch.set_flush_denormal(False)
    try:
        STBSMRunner.from_cfg(cfg)
        assert _flushes_denormals() is flush
    finally:
        torch.set_flush_denormal(False)


_FAULTS_SCRIPT = '''
import resource, sys
import numpy as np
from stbsm_mm.engine.speed import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == 'retain' else False
block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB: above glibc's largest dynamic mmap threshold (32 MiB)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block = np.ones(64 << 20, dtype=np.uint8)
    del block
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(applied, after - before)
'''


def _faults_of_reused_blocks(mode: str):
    result = subprocess.run(
        [sys.executable, '-c', _FAULTS_SCRIPT, mode], capture_output=True,
        text=True, check=True, cwd=REPO_ROOT)
    applied, faults = result.stdout.split()
    return applied == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc malloc settings')
def test_retain_freed_memory_reuses_pages():
    applied, retained = _faults_of_reused_blocks('retain')
    if not applied:
        pytest.skip('the C library is not glibc')
    _, default = _faults_of_reused_blocks('default')
    # By default each 64 MiB block is mapped afresh and faulted in: 16384
    # faults of 4 KiB pages, or 32 of 2 MiB huge pages, per block.
    # Retained, the first block's pages are reused.
    assert default >= 5 * 32
    assert retained * 10 < default


def test_retain_freed_memory_rejects_bad_limit():
    with pytest.raises(ValueError, match='limit=0'):
        retain_freed_memory(0)


@pytest.mark.parametrize('retain', [True, False])
def test_runner_retain_freed_memory_setting(tmp_path, monkeypatch, retain):
    calls = []
    monkeypatch.setattr('stbsm_mm.engine.runner.retain_freed_memory',
                        lambda: calls.append(True) or True)
    cfg = _config(retain_freed_memory=retain)
    cfg.work_dir = str(tmp_path)
    # A name of its own: MMEngine warns when two runners share one.
    cfg.experiment_name = f'retain_freed_memory_{retain}'
    prepare_run_config(cfg)
    STBSMRunner.from_cfg(cfg)
    assert calls == ([True] if retain else [])
