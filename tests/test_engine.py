"""Checkpoint trust, schedule fitting, data-root sync and launcher set-up."""
import json
import os
import pickle
import stat

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader

import stbsm_mm  # noqa: F401  (registers the checkpoint loader)
from conftest import REPO_ROOT
from stbsm_mm.engine import (TRUST_RECORD, UntrustedCheckpointError,
                             fit_schedule_to_max_epochs, is_trusted_checkpoint,
                             load_checkpoint_file, prune_trust_record,
                             record_trusted_checkpoint,
                             sync_data_root)
from stbsm_mm.engine import dist as dist_module


class _RunsCode:
    """Unpickling this calls ``os.system``: a stand-in for a malicious file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _mmengine_style_checkpoint(path):
    # Objects that weights-only loading rejects, as MMEngine's message hub
    # stores them when resuming.
    torch.save({'state_dict': {'w': torch.ones(2)},
                'meta': {'history': _History([1.0, 2.0])}}, path)


class _History:

    def __init__(self, values):
        self.values = values


def test_untrusted_pickle_rejected(tmp_path):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'crafted.pth'
    with open(path, 'wb') as file:
        pickle.dump({'state_dict': _RunsCode(marker)}, file)

    with pytest.raises(UntrustedCheckpointError, match='crafted.pth'):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_mmengine_loader_uses_safe_loading(tmp_path):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'crafted.pth'
    with open(path, 'wb') as file:
        pickle.dump({'state_dict': _RunsCode(marker)}, file)

    with pytest.raises(UntrustedCheckpointError):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_recorded_checkpoint_loads_fully(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    _mmengine_style_checkpoint(path)
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint_file(path)

    digest = record_trusted_checkpoint(path)
    record = json.loads((tmp_path / TRUST_RECORD).read_text())
    assert record == {'epoch_1.pth': digest}
    assert is_trusted_checkpoint(path)
    loaded = load_checkpoint_file(path)
    assert loaded['meta']['history'].values == [1.0, 2.0]


def test_modified_checkpoint_loses_trust(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    _mmengine_style_checkpoint(path)
    record_trusted_checkpoint(path)
    with open(path, 'ab') as file:
        file.write(b'tampered')
    assert not is_trusted_checkpoint(path)


def test_plain_state_dict_loads_untrusted(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.arange(3.0)}}, path)
    loaded = load_checkpoint_file(path)
    assert torch.equal(loaded['state_dict']['w'], torch.arange(3.0))


def _schedule_config(max_epochs):
    cfg = Config.fromfile(REPO_ROOT / 'configs/stbsm/resnet34_stbsm.py')
    cfg.train_cfg.max_epochs = max_epochs
    return cfg


def test_schedule_kept_at_200_epochs():
    cfg = _schedule_config(200)
    fit_schedule_to_max_epochs(cfg)
    assert [(s['begin'], s['end']) for s in cfg.param_scheduler] == [(0, 10),
                                                                    (10, 200)]


def test_schedule_scaled_to_20_epochs():
    cfg = _schedule_config(20)
    fit_schedule_to_max_epochs(cfg)
    assert [(s['begin'], s['end']) for s in cfg.param_scheduler] == [(0, 1),
                                                                    (1, 20)]


def test_schedule_for_two_epochs_has_no_overlap():
    cfg = _schedule_config(2)
    fit_schedule_to_max_epochs(cfg)
    assert [(s['begin'], s['end']) for s in cfg.param_scheduler] == [(0, 1),
                                                                    (1, 2)]


def test_schedule_for_one_epoch_drops_decay():
    cfg = _schedule_config(1)
    fit_schedule_to_max_epochs(cfg)
    assert [s['type'] for s in cfg.param_scheduler] == ['LinearLR']
    assert cfg.param_scheduler[0]['end'] == 1


def test_data_root_reaches_every_dataset():
    cfg = Config.fromfile(REPO_ROOT / 'configs/stbsm/mvitv2_stbsm_external.py')
    cfg.merge_from_dict({'data_root': '/data/prepared'})
    sync_data_root(cfg)
    assert cfg.train_dataloader.dataset.dataset.data_root == '/data/prepared'
    assert cfg.val_dataloader.dataset.data_root == '/data/prepared'
    assert cfg.test_dataloader.dataset.data_root == '/data/prepared'
    assert cfg.test_dataloader.dataset.split == 'external'
    assert cfg.val_dataloader.dataset.split == 'val'


def test_slurm_environment_for_cpu(tmp_path, monkeypatch):
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\necho node-a\necho node-b\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    # setenv first so that monkeypatch restores each variable afterwards;
    # delenv of an unset variable records nothing to undo.
    for name in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE',
                 'LOCAL_RANK'):
        monkeypatch.setenv(name, 'unset')
        monkeypatch.delenv(name)
    monkeypatch.setenv('SLURM_NODELIST', 'node-[a-b]')
    monkeypatch.setenv('SLURM_NTASKS', '4')
    monkeypatch.setenv('SLURM_PROCID', '3')
    monkeypatch.setenv('SLURM_LOCALID', '1')

    dist_module._export_slurm_environment()
    assert os.environ['MASTER_ADDR'] == 'node-a'
    assert os.environ['WORLD_SIZE'] == '4'
    assert os.environ['RANK'] == '3'
    assert os.environ['LOCAL_RANK'] == '1'


def test_unknown_launcher_rejected():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(ValueError, match='launcher'):
        dist_module.setup_distributed(cfg, 'mpi')


def test_record_drops_deleted_checkpoints(tmp_path):
    first, second = tmp_path / 'epoch_1.pth', tmp_path / 'epoch_2.pth'
    _mmengine_style_checkpoint(first)
    _mmengine_style_checkpoint(second)
    record_trusted_checkpoint(first)
    first.unlink()
    record_trusted_checkpoint(second)
    record = json.loads((tmp_path / TRUST_RECORD).read_text())
    assert list(record) == ['epoch_2.pth']


def test_prune_trust_record(tmp_path):
    path = tmp_path / 'best.pth'
    _mmengine_style_checkpoint(path)
    record_trusted_checkpoint(path)
    path.unlink()
    prune_trust_record(tmp_path)
    assert json.loads((tmp_path / TRUST_RECORD).read_text()) == {}
