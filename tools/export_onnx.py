"""Export a trained classifier to ONNX with its preprocessing constants.

The ONNX model maps a preprocessed batch (N x 3 x H x W, float32) to the
softmax probabilities of the classes. Input size, mean, std, channel order,
class names, positive class, threshold and the crop preprocessing of the
prepared data (from ``DATA_ROOT/manifest.json``) are stored in its
``metadata_props``. After the export, ONNX Runtime's probabilities on a
random batch are compared with PyTorch's.

Examples:
    python tools/export_onnx.py configs/stbsm/resnet34_stbsm.py \
        work_dirs/resnet34_stbsm/epoch_200.pth --out resnet34_stbsm.onnx \
        --cfg-options data_root=data/stbsm_prepared
    python tools/export_onnx.py configs/stbsm/resnet34_stbsm.py \
        work_dirs/resnet34_stbsm/epoch_200.pth --out model.onnx \
        --threshold-file work_dirs/resnet34_stbsm/val/threshold.json
"""
import argparse
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a trained classifier of T2-weighted lesion crops '
        'to ONNX.')
    parser.add_argument('config', help='the config the checkpoint was '
                        'trained with, e.g. configs/stbsm/resnet34_stbsm.py')
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')
    parser.add_argument('--out', required=True,
                        help='ONNX file to write, e.g. model.onnx')
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument(
        '--threshold', type=float,
        help='decision threshold on the positive-class probability to '
        'record (default: the config\'s test_evaluator threshold)')
    threshold.add_argument(
        '--threshold-file',
        help='threshold.json written by tools/test.py --threshold youden; '
        'its threshold is recorded')
    parser.add_argument(
        '--opset', type=int,
        help='ONNX opset version (default: the exporter\'s default)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value, e.g. data_root=DIR (the '
        'prepared data whose manifest.json is recorded)')
    return parser.parse_args(argv)


def load_config(args) -> Config:
    from stbsm_mm.engine import sync_data_root

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    sync_data_root(cfg)

    threshold = args.threshold
    if args.threshold_file:
        from stbsm_mm.evaluation import read_threshold_json
        try:
            threshold = read_threshold_json(args.threshold_file)['threshold']
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f'error: {error}')
    if threshold is not None:
        set_threshold(cfg, threshold)
    return cfg


def set_threshold(cfg: Config, threshold: float) -> None:
    """Set the DiagnosisMetric threshold of the test evaluator."""
    from stbsm_mm.evaluation.binary_figures import validate_threshold

    try:
        threshold = validate_threshold(threshold)
    except ValueError as error:
        raise SystemExit(f'error: {error}')
    evaluator = cfg.get('test_evaluator')
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    diagnosis = [metric for metric in metrics
                 if metric and metric.get('type') == 'DiagnosisMetric']
    if not diagnosis:
        raise SystemExit('error: the config\'s test_evaluator has no '
                         'DiagnosisMetric whose threshold could be set.')
    for metric in diagnosis:
        metric['threshold'] = threshold


def load_model(cfg: Config, checkpoint: str):
    """Build the classifier, load the checkpoint, return (model, classes)."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    from stbsm_mm.engine import UntrustedCheckpointError

    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    # The checkpoint replaces every weight, so pretrained weights are not
    # loaded first.
    model_cfg.backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)
    try:
        loaded = load_checkpoint(model, checkpoint, map_location='cpu',
                                 strict=True)
    except (UntrustedCheckpointError, RuntimeError) as error:
        raise SystemExit(f'error: {error}')
    model.eval()

    classes: Optional[list] = None
    meta = loaded.get('meta') if isinstance(loaded, dict) else None
    if isinstance(meta, dict):
        classes = (meta.get('dataset_meta') or {}).get('classes')
    return model, classes


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint {args.checkpoint} not found.')
    import numpy as np
    from mmengine.logging import MMLogger

    import stbsm_mm  # noqa: F401  (registers modules and the loader)
    from stbsm_mm.deploy import (TOLERANCE, export_metadata, export_onnx,
                                 onnx_max_difference)
    from stbsm_mm.utils import sha256_of_file

    logger = MMLogger.get_instance('stbsm_mm')
    cfg = load_config(args)
    model, classes = load_model(cfg, args.checkpoint)
    try:
        metadata = export_metadata(cfg, classes,
                                   sha256_of_file(args.checkpoint))
    except ValueError as error:
        raise SystemExit(f'error: {error}')

    logger.info(f'Exporting {args.checkpoint} to {args.out} with '
                'torch.onnx.export(dynamo=True).')
    out = export_onnx(model, args.out, metadata, opset_version=args.opset)

    size = int(metadata['input_size'])
    batch = np.random.default_rng(0).standard_normal(
        (3, 3, size, size)).astype(np.float32)
    difference = onnx_max_difference(model, out, batch)
    if difference > TOLERANCE:
        raise SystemExit(
            f'error: ONNX Runtime\'s probabilities differ from PyTorch\'s by '
            f'up to {difference:.2e} (tolerance {TOLERANCE:.0e}); {out} is '
            'not reliable.')
    logger.info(f'Wrote {out}: ONNX Runtime matches PyTorch within '
                f'{difference:.2e} (tolerance {TOLERANCE:.0e}) on a batch '
                'of 3.')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
