"""Pretrained backbone weights: local checkpoints, the model zoo, the tools."""
import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import mmpretrain
import stbsm_mm  # noqa: F401  (registers the checkpoint loader)
from conftest import REPO_ROOT, run_tool
from stbsm_mm.engine import (UntrustedCheckpointError, apply_pretrained,
                             resolve_pretrained)
from stbsm_mm.utils import sha256_of_file

CONFIGS = ['resnet34', 'resnet101', 'efficientnet-b3', 'mvitv2']
RESNET34 = REPO_ROOT / 'configs' / 'stbsm' / 'resnet34_stbsm.py'
TINY = [
    'train_cfg.max_epochs=1',
    'train_dataloader.dataset.times=1',
    'train_dataloader.batch_size=4',
    'train_dataloader.dataset.dataset.indices=4',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
]


class _RunsCode:
    """Unpickling this calls ``os.system``: a stand-in for a malicious file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _config(name: str) -> Config:
    return Config.fromfile(REPO_ROOT / 'configs' / 'stbsm' /
                           f'{name}_stbsm.py')


def _build(cfg: Config, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def _distinctive_classifier(name: str) -> dict:
    """Return a classifier state_dict whose first backbone tensor is 0.5."""
    torch.manual_seed(1)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        state_dict = MODELS.build(_config(name).model).state_dict()
    first = next(key for key in state_dict if key.startswith('backbone.'))
    state_dict[first] = torch.full_like(state_dict[first], 0.5)
    return state_dict


def _zoo_weights(model_name: str) -> str:
    """Read a model's weight URL straight from MMPreTrain's metafiles."""
    mim = Path(mmpretrain.__file__).parent / '.mim'
    index = yaml.safe_load((mim / 'model-index.yml').read_text())
    for metafile in index['Import']:
        for model in yaml.safe_load((mim / metafile).read_text())['Models']:
            if model['Name'] == model_name:
                return model['Weights']
    raise AssertionError(f'{model_name} not in the model index')


@pytest.mark.parametrize('name', CONFIGS)
def test_classifier_file_loads_backbone_only(name, tmp_path):
    saved = _distinctive_classifier(name)
    path = tmp_path / 'classifier.pth'
    torch.save(saved, path)
    cfg = _config(name)

    record = apply_pretrained(cfg, str(path))
    model = _build(cfg, seed=2)

    assert cfg.model.backbone.init_cfg['prefix'] == 'backbone.'
    assert record['sha256'] == sha256_of_file(path)
    loaded = model.state_dict()
    backbone_keys = [key for key in saved if key.startswith('backbone.')]
    head_keys = [key for key in saved if key.startswith('head.')]
    assert backbone_keys and head_keys
    for key in backbone_keys:
        assert torch.equal(loaded[key], saved[key]), key
    for key in head_keys:
        if key.endswith('weight'):
            assert not torch.equal(loaded[key], saved[key]), key


def test_bare_backbone_file_loads(tmp_path):
    saved = {
        key[len('backbone.'):]: value
        for key, value in _distinctive_classifier('resnet34').items()
        if key.startswith('backbone.')
    }
    saved['conv1.weight'] = torch.full_like(saved['conv1.weight'], 0.5)
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': saved}, path)
    cfg = _config('resnet34')

    apply_pretrained(cfg, str(path))
    model = _build(cfg, seed=2)

    assert cfg.model.backbone.init_cfg['prefix'] is None
    assert torch.all(model.backbone.conv1.weight == 0.5)
    for key, value in saved.items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_key_mismatch_logged(tmp_path):
    saved = _build(_config('resnet34'), seed=1).backbone.state_dict()
    del saved['layer4.1.conv2.weight']
    saved['extra_layer.weight'] = torch.ones(3)
    path = tmp_path / 'partial.pth'
    torch.save(saved, path)
    cfg = _config('resnet34')
    apply_pretrained(cfg, str(path))
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)

    try:
        _build(cfg, seed=2)
    finally:
        logger.removeHandler(handler)

    log = '\n'.join(messages)
    assert 'missing keys' in log
    assert 'layer4.1.conv2.weight' in log
    assert 'unexpected key' in log
    assert 'extra_layer.weight' in log


def test_crafted_pickle_rejected(tmp_path):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'crafted.pth'
    with open(path, 'wb') as file:
        pickle.dump({'state_dict': _RunsCode(marker)}, file)

    with pytest.raises(UntrustedCheckpointError, match='crafted.pth'):
        apply_pretrained(_config('resnet34'), str(path))
    assert not marker.exists()


def test_unrelated_weights_rejected(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'encoder.weight': torch.ones(2)}, path)

    with pytest.raises(ValueError, match='none of its 1 tensors'):
        apply_pretrained(_config('resnet34'), str(path))


def test_missing_file_error(tmp_path):
    missing = tmp_path / 'absent.pth'

    with pytest.raises(FileNotFoundError, match='absent.pth'):
        apply_pretrained(_config('resnet34'), str(missing))


def test_config_setting_used(tmp_path):
    path = tmp_path / 'classifier.pth'
    torch.save(_distinctive_classifier('resnet34'), path)
    cfg = _config('resnet34')
    cfg.pretrained = str(path)

    record = apply_pretrained(cfg)

    assert record['checkpoint'] == str(path)
    assert cfg.model.backbone.init_cfg['checkpoint'] == str(path)


def test_none_keeps_random_init():
    cfg = _config('resnet34')

    assert cfg.pretrained is None
    assert apply_pretrained(cfg, 'none') is None
    assert 'init_cfg' not in cfg.model.backbone


@pytest.mark.parametrize('name', CONFIGS)
def test_zoo_resolves_metafile_url(name):
    cfg = _config(name)

    source = resolve_pretrained('zoo', cfg.pretrained_zoo_model,
                                cfg.model.backbone)

    assert source.url == _zoo_weights(cfg.pretrained_zoo_model)
    assert source.zoo_model == cfg.pretrained_zoo_model
    assert Path(source.checkpoint).name == Path(source.url).name


def test_zoo_name_resolves_url():
    source = resolve_pretrained('resnet34_8xb32_in1k')

    assert source.url == _zoo_weights('resnet34_8xb32_in1k')


def test_zoo_wrong_backbone_rejected():
    cfg = _config('resnet34')

    with pytest.raises(ValueError, match='ResNet 101'):
        resolve_pretrained('resnet101_8xb32_in1k', None, cfg.model.backbone)


def test_unknown_zoo_name_rejected():
    with pytest.raises(ValueError, match='no_such_model'):
        resolve_pretrained('no_such_model')


def test_train_missing_file_exits(tmp_path):
    (tmp_path / 'annotations').mkdir()
    for split in ('train', 'val'):
        (tmp_path / 'annotations' / f'{split}.json').write_text('{}')
    missing = tmp_path / 'absent.pth'

    result = run_tool('tools/train.py', RESNET34, '--pretrained', missing,
                      '--work-dir', tmp_path / 'work', '--cfg-options',
                      f'data_root={tmp_path}', expect_ok=False)

    assert result.returncode != 0
    assert f'error: pretrained checkpoint {missing} not found' in \
        result.output
    assert not (tmp_path / 'work').exists()


def test_cross_validate_missing_file_exits(tmp_path):
    (tmp_path / 'manifest.json').write_text(
        json.dumps({'split': {'n_folds': 2}}))
    missing = tmp_path / 'absent.pth'

    result = run_tool('tools/cross_validate.py', RESNET34, '--data-root',
                      tmp_path, '--work-dir', tmp_path / 'work',
                      '--pretrained', missing, expect_ok=False)

    assert result.returncode == 1
    assert str(missing) in result.output
    assert not (tmp_path / 'work').exists()


def test_train_records_pretrained(spider_prepared, tmp_path):
    path = tmp_path / 'classifier.pth'
    torch.save(_distinctive_classifier('resnet34'), path)
    work_dir = tmp_path / 'work'

    result = run_tool('tools/train.py', RESNET34, '--pretrained', path,
                      '--work-dir', work_dir, '--no-validate', '--cfg-options',
                      f'data_root={spider_prepared}', *TINY)

    record = json.loads((work_dir / 'train_run.json').read_text())
    assert record['pretrained']['checkpoint'] == str(path)
    assert record['pretrained']['sha256'] == sha256_of_file(path)
    assert record['pretrained']['prefix'] == 'backbone.'
    assert f'load backbone. in model from: {path}' in result.output
