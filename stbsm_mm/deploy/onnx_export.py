"""Export a trained classifier to ONNX with its preprocessing in the metadata.

The ONNX graph is the classifier (backbone, neck and head) followed by a
softmax, so its output ``probabilities`` has one row per crop and one column
per class. Its input ``input`` is a float32 batch in NCHW layout that is
already preprocessed as the config's test pipeline and data preprocessor do:

1. read the crop as 8-bit, three channels (a grayscale crop is repeated);
2. pad to a square with zeros at the bottom or right;
3. resize to ``input_size`` x ``input_size`` (bilinear, OpenCV);
4. order the channels as ``channel_order`` and compute
   ``(pixel - mean) / std`` per channel.

Everything a user needs for these steps and for reading the output (class
names, positive class, threshold, the crop preprocessing of the prepared
data) is stored as JSON strings in the model's ``metadata_props``;
:func:`read_onnx_metadata` decodes them and :func:`preprocess_crop` applies
them.
"""
import json
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from ..classes import DEFAULT_CLASSES

PathLike = Union[str, Path]

INPUT_NAME = 'input'
OUTPUT_NAME = 'probabilities'
# Version of the metadata layout below; bump it when a key changes meaning.
METADATA_FORMAT = 1
# Largest absolute difference between ONNX Runtime's and PyTorch's
# probabilities that export_onnx accepts.
TOLERANCE = 1e-4


class SoftmaxClassifier(torch.nn.Module):
    """An MMPreTrain classifier whose output is the softmax over classes.

    Args:
        classifier: An ``ImageClassifier`` (backbone, neck and head).

    Examples:
        >>> wrapped = SoftmaxClassifier(model).eval()  # doctest: +SKIP
        >>> wrapped(torch.zeros(2, 3, 224, 224)).sum(dim=1)  # doctest: +SKIP
        tensor([1., 1.])
    """

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(inputs, mode='tensor')
        return torch.softmax(logits, dim=1)


def export_metadata(cfg: Config,
                    classes: Optional[Sequence[str]] = None,
                    checkpoint_sha256: Optional[str] = None) -> Dict[str, str]:
    """Collect the preprocessing constants and decision rule of a config.

    Args:
        cfg: The training config (``data_root`` already set).
        classes: Class names in index order, e.g. from the checkpoint's
            ``meta['dataset_meta']``. ``None`` reads them from the prepared
            data's ``manifest.json``, else uses ``('STB', 'SM')``.
        checkpoint_sha256: SHA-256 of the exported checkpoint, recorded for
            provenance.

    Returns:
        A dict of metadata keys to JSON-encoded values.

    Raises:
        ValueError: The config's test pipeline has steps that
            :func:`preprocess_crop` does not reproduce, or the positive class
            is not one of ``classes``.

    Examples:
        >>> cfg = Config.fromfile('configs/stbsm/resnet34_stbsm.py')
        >>> json.loads(export_metadata(cfg)['input_size'])
        224
    """
    pipeline = _test_pipeline(cfg)
    input_size = _check_pipeline(pipeline)

    manifest = _manifest(cfg.get('data_root'))
    if classes is None:
        classes = manifest.get('classes') if manifest else None
    if classes is None:
        classes = DEFAULT_CLASSES
        MMLogger.get_current_instance().warning(
            'Neither the checkpoint nor a manifest.json names the classes. '
            f'Recording the default classes {list(classes)}.')
    classes = [str(name) for name in classes]
    num_classes = cfg.model.head.get('num_classes')
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(
            f'The config\'s head has {num_classes} classes but the class '
            f'names are {classes}. Export with the config the checkpoint '
            'was trained with.')

    positive_class, threshold = _decision_rule(cfg, classes)
    preprocessor = cfg.get('data_preprocessor') or cfg.model.get(
        'data_preprocessor', {})
    values = {
        'stbsm_mm_onnx_format': METADATA_FORMAT,
        'input_name': INPUT_NAME,
        'output_name': OUTPUT_NAME,
        'input_layout': 'NCHW float32, (pixel - mean) / std per channel',
        'input_size': input_size,
        'mean': [float(value) for value in preprocessor['mean']],
        'std': [float(value) for value in preprocessor['std']],
        'channel_order': 'RGB' if preprocessor.get('to_rgb') else 'BGR',
        'pad_to_square': {'pad_val': _pad_value(pipeline),
                          'position': 'bottom-right'},
        'resize': {'interpolation': 'bilinear', 'backend': 'cv2'},
        'classes': classes,
        'positive_class': positive_class,
        'threshold': threshold,
        'crop_preprocessing': manifest.get('preprocessing')
        if manifest else None,
        'test_pipeline': pipeline,
        'checkpoint_sha256': checkpoint_sha256,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def export_onnx(model: torch.nn.Module,
                out: PathLike,
                metadata: Dict[str, str],
                opset_version: Optional[int] = None) -> Path:
    """Export a classifier to one ONNX file with a dynamic batch axis.

    The export uses PyTorch's ``torch.export``-based exporter
    (``dynamo=True``) and stores the weights inside the file.

    Args:
        model: An MMPreTrain ``ImageClassifier`` with its weights loaded.
        out: Path of the ``.onnx`` file to write.
        metadata: From :func:`export_metadata`; needs ``input_size``.
        opset_version: ONNX opset; ``None`` uses the exporter's default.

    Returns:
        ``out`` as a Path.

    Examples:
        >>> export_onnx(model, 'model.onnx', export_metadata(cfg))
        ...     # doctest: +SKIP
    """
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = json.loads(metadata['input_size'])
    wrapped = SoftmaxClassifier(model).eval()
    # A batch of 2, not 1, keeps the exporter from fixing the batch size.
    example = torch.zeros(2, 3, size, size)

    batch = torch.export.Dim('batch', min=1)
    torch.onnx.export(wrapped, (example, ), str(out), dynamo=True,
                      external_data=False, opset_version=opset_version,
                      verbose=False,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes={'inputs': {0: batch}})

    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return out


def read_onnx_metadata(path: PathLike) -> dict:
    """Return the decoded stbsm-mm metadata of an exported ONNX file.

    Args:
        path: An ONNX file written by :func:`export_onnx`.

    Returns:
        The metadata, with JSON values decoded.

    Examples:
        >>> read_onnx_metadata('model.onnx')['classes']  # doctest: +SKIP
        ['STB', 'SM']
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: json.loads(entry.value)
            for entry in proto.metadata_props}


def preprocess_crop(image: Union[PathLike, np.ndarray],
                    metadata: dict) -> np.ndarray:
    """Turn one lesion crop into the ONNX model's input, without MMPreTrain.

    Args:
        image: A crop file (e.g. ``crops/*.png``), or an 8-bit array as
            OpenCV reads it (H x W grayscale or H x W x 3 BGR).
        metadata: From :func:`read_onnx_metadata`.

    Returns:
        A float32 array of shape (1, 3, input_size, input_size).

    Raises:
        FileNotFoundError: ``image`` is a path that cannot be read.

    Examples:
        >>> metadata = read_onnx_metadata('model.onnx')  # doctest: +SKIP
        >>> preprocess_crop('crops/r1.png', metadata).shape  # doctest: +SKIP
        (1, 3, 224, 224)
    """
    if not isinstance(image, np.ndarray):
        path = str(image)
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'{path}: crop not found or unreadable.')
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)

    side = max(image.shape[:2])
    pad_val = metadata['pad_to_square']['pad_val']
    image = cv2.copyMakeBorder(image, 0, side - image.shape[0], 0,
                               side - image.shape[1], cv2.BORDER_CONSTANT,
                               value=(pad_val, ) * 3)

    size = metadata['input_size']
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)

    if metadata['channel_order'] == 'RGB':
        image = image[..., ::-1]
    mean = np.asarray(metadata['mean'], dtype=np.float32)
    std = np.asarray(metadata['std'], dtype=np.float32)
    normalized = (image.astype(np.float32) - mean) / std
    return np.ascontiguousarray(normalized.transpose(2, 0, 1)[None])


def _test_pipeline(cfg: Config) -> List[dict]:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    dataset = loader['dataset']
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']
    return [dict(step) for step in dataset['pipeline']]


def _check_pipeline(pipeline: List[dict]) -> int:
    """Return the input size, or raise unless ``preprocess_crop`` matches."""
    kinds = [step['type'] for step in pipeline]
    expected = ['LoadImageFromFile', 'mmcv.Pad', 'Resize', 'PackInputs']
    pad, resize = (pipeline[1], pipeline[2]) if len(pipeline) == 4 else ({},
                                                                          {})
    scale = resize.get('scale')
    if (kinds != expected or not pad.get('pad_to_square')
            or pad.get('padding_mode', 'constant') != 'constant'
            or resize.get('keep_ratio', False)
            or resize.get('interpolation', 'bilinear') != 'bilinear'
            or not isinstance(scale, (tuple, list)) or scale[0] != scale[1]):
        raise ValueError(
            f'The test pipeline {pipeline} differs from the one the ONNX '
            f'metadata describes ({" -> ".join(expected)} with '
            'pad_to_square and a square bilinear resize). Export with a '
            'config whose test pipeline has that form.')
    return int(scale[0])


def _pad_value(pipeline: List[dict]) -> float:
    pad_val = pipeline[1].get('pad_val', 0)
    if isinstance(pad_val, dict):
        pad_val = pad_val.get('img', 0)
    return pad_val


def _manifest(data_root: Optional[str]) -> Optional[dict]:
    if not data_root:
        return None
    path = osp.join(data_root, 'manifest.json')
    if not osp.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def _decision_rule(cfg: Config, classes: List[str]):
    """Return (positive class name, threshold) of the DiagnosisMetric."""
    evaluator = cfg.get('test_evaluator') or cfg.get('val_evaluator') or {}
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    metric = next((m for m in metrics if m.get('type') == 'DiagnosisMetric'),
                  {})
    positive = metric.get('positive_class', 0)
    threshold = float(metric.get('threshold', 0.5))
    if isinstance(positive, int):
        if not 0 <= positive < len(classes):
            raise ValueError(
                f'positive_class={positive} is invalid: the classes '
                f'{classes} have indices 0 to {len(classes) - 1}.')
        return classes[positive], threshold
    if positive not in classes:
        raise ValueError(f'positive_class={positive!r} is not one of the '
                         f'classes {classes}. Set it to one of them.')
    return positive, threshold


def onnx_max_difference(model: torch.nn.Module, onnx_path: PathLike,
                        inputs: np.ndarray) -> float:
    """Return the max absolute difference of ONNX Runtime's probabilities.

    Args:
        model: The exported ``ImageClassifier``.
        onnx_path: Its ONNX file.
        inputs: A preprocessed float32 batch (N x 3 x H x W).

    Returns:
        The largest absolute difference between the probabilities from ONNX
        Runtime (CPU) and from PyTorch.

    Examples:
        >>> onnx_max_difference(model, 'model.onnx', batch) < TOLERANCE
        ...     # doctest: +SKIP
        True
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(onnx_path), providers=['CPUExecutionProvider'])
    exported = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    with torch.no_grad():
        expected = SoftmaxClassifier(model).eval()(torch.from_numpy(inputs))
    return float(np.abs(exported - expected.numpy()).max())
