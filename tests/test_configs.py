"""The four backbone configs build and train one step on real crops."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS

import stbsm_mm  # noqa: F401
from conftest import REPO_ROOT

BACKBONES = {
    'resnet34': 'ResNet',
    'resnet101': 'ResNet',
    'efficientnet-b3': 'EfficientNet',
    'mvitv2': 'MViT',
}


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_config_settings(name):
    cfg = Config.fromfile(REPO_ROOT / f'configs/stbsm/{name}_stbsm.py')
    assert cfg.model.backbone.type == BACKBONES[name]
    assert cfg.model.head.num_classes == 2
    assert tuple(cfg.model.head.topk) == (1, )
    assert cfg.data_preprocessor.num_classes == 2
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 0.0125
    assert cfg.train_dataloader.batch_size == 32
    assert cfg.train_cfg.max_epochs == 200
    assert cfg.train_dataloader.dataset.times == 20
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports.imports == ['stbsm_mm']
    # No batch augment expects 1000 classes.
    assert not (cfg.model.get('train_cfg') or {}).get('augments')


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_one_training_step(name, spider_prepared):
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(REPO_ROOT / f'configs/stbsm/{name}_stbsm.py')
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset.dataset)
    dataset_cfg.data_root = str(spider_prepared)
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[0], dataset[1]])
    assert batch['inputs'][0].shape == (3, 224, 224)

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.data_preprocessor = cfg.data_preprocessor
    model = MODELS.build(model_cfg)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = [p.detach().clone() for p in model.parameters()]

    losses = model.train_step(batch, optim_wrapper)
    assert torch.isfinite(losses['loss'])
    changed = sum(not torch.equal(a, b.detach())
                  for a, b in zip(before, model.parameters()))
    assert changed > 0

    model.eval()
    with torch.no_grad():
        outputs = model.val_step(batch)
    scores = torch.stack([sample.pred_score for sample in outputs])
    assert scores.shape == (2, 2)
    assert torch.allclose(scores.sum(dim=1), torch.ones(2))
