"""tools/export_onnx.py: ONNX Runtime against PyTorch on real lesion crops.

The exported ResNet34 runs in ONNX Runtime on crops of the real demo cohort,
preprocessed from the ONNX metadata alone by ``preprocess_crop``. PyTorch
gets the same crops through the config's test pipeline (MMPreTrain's
transforms and data preprocessor). The probabilities must agree to a max
absolute difference of 1e-4.
"""
import json

import numpy as np
import onnxruntime
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

import stbsm_mm  # noqa: F401  (registers modules and the loader)
from conftest import REPO_ROOT, run_tool
from stbsm_mm.deploy import preprocess_crop, read_onnx_metadata
from stbsm_mm.utils import sha256_of_file

CONFIG = REPO_ROOT / 'configs' / 'stbsm' / 'resnet34_stbsm.py'
MAX_ABS_DIFFERENCE = 1e-4
N_CROPS = 6


def _build_model(cfg: Config) -> torch.nn.Module:
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(model_cfg)


@pytest.fixture(scope='module')
def exported(spider_prepared, tmp_path_factory):
    """A freshly initialised ResNet34 checkpoint and its ONNX export."""
    folder = tmp_path_factory.mktemp('onnx')
    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    model = _build_model(cfg)
    model.init_weights()
    # The head's fresh N(0, 0.01) weights give probabilities of about 0.5
    # for every crop; larger weights make the comparison below telling.
    torch.nn.init.normal_(model.head.fc.weight, std=1.0)
    checkpoint = folder / 'resnet34.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    out = folder / 'resnet34.onnx'

    result = run_tool('tools/export_onnx.py', CONFIG, checkpoint, '--out',
                      out, '--threshold', '0.3', '--cfg-options',
                      f'data_root={spider_prepared}')
    return checkpoint, out, result.output


def _torch_probabilities(checkpoint, crops) -> np.ndarray:
    """Run the crops through the config's test pipeline and PyTorch."""
    cfg = Config.fromfile(CONFIG)
    model = _build_model(cfg)
    load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    model.eval()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose(cfg.test_pipeline)
        packed = [pipeline(dict(img_path=str(path))) for path in crops]
    batch = dict(inputs=[item['inputs'] for item in packed],
                 data_samples=[item['data_samples'] for item in packed])
    with torch.no_grad():
        inputs = model.data_preprocessor(batch, False)['inputs']
        logits = model(inputs, mode='tensor')
    return torch.softmax(logits, dim=1).numpy(), inputs.numpy()


def test_onnx_matches_torch_on_crops(exported, spider_prepared):
    checkpoint, out, _ = exported
    crops = sorted((spider_prepared / 'crops').glob('*.png'))[:N_CROPS]
    assert len(crops) == N_CROPS
    metadata = read_onnx_metadata(out)
    session = onnxruntime.InferenceSession(
        str(out), providers=['CPUExecutionProvider'])

    inputs = np.concatenate([preprocess_crop(path, metadata)
                             for path in crops])
    exported_probabilities = session.run(
        [metadata['output_name']], {metadata['input_name']: inputs})[0]
    single = session.run([metadata['output_name']],
                         {metadata['input_name']: inputs[:1]})[0]
    expected, torch_inputs = _torch_probabilities(checkpoint, crops)

    assert exported_probabilities.shape == (N_CROPS, 2)
    assert np.ptp(expected[:, 0]) > 100 * MAX_ABS_DIFFERENCE
    assert np.abs(inputs - torch_inputs).max() <= MAX_ABS_DIFFERENCE
    assert np.abs(exported_probabilities - expected).max() <= \
        MAX_ABS_DIFFERENCE
    assert np.abs(single - expected[:1]).max() <= MAX_ABS_DIFFERENCE
    assert np.allclose(exported_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_metadata_round_trip(exported, spider_prepared):
    checkpoint, out, _ = exported
    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    cfg = Config.fromfile(CONFIG)

    metadata = read_onnx_metadata(out)

    assert metadata['input_size'] == cfg.input_size
    assert metadata['mean'] == cfg.data_preprocessor.mean
    assert metadata['std'] == cfg.data_preprocessor.std
    assert metadata['channel_order'] == 'RGB'
    assert metadata['classes'] == manifest['classes']
    assert metadata['positive_class'] == manifest['classes'][0]
    assert metadata['threshold'] == 0.3
    assert metadata['crop_preprocessing'] == manifest['preprocessing']
    assert metadata['checkpoint_sha256'] == sha256_of_file(checkpoint)


def test_batch_axis_dynamic(exported):
    _, out, output = exported
    session = onnxruntime.InferenceSession(
        str(out), providers=['CPUExecutionProvider'])

    shape = session.get_inputs()[0].shape

    assert isinstance(shape[0], str)
    assert shape[1:] == [3, 224, 224]
    assert 'ONNX Runtime matches PyTorch' in output


def test_missing_checkpoint_exits(tmp_path):
    missing = tmp_path / 'absent.pth'

    result = run_tool('tools/export_onnx.py', CONFIG, missing, '--out',
                      tmp_path / 'model.onnx', expect_ok=False)

    assert result.returncode != 0
    assert f'error: checkpoint {missing} not found' in result.output
    assert not (tmp_path / 'model.onnx').exists()
