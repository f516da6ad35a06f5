"""Draw Grad-CAM maps of a trained classifier on lesion crops.

Examples:
    One crop, written to OUT_DIR/<crop name>_cam.png::

        python tools/vis_cam.py configs/stbsm/resnet34_stbsm.py \
            work_dirs/resnet34_stbsm/best.pth \
            --image data/spider_prepared/crops/100_t2_ivd3.png

    A split of a prepared dataset: one overlay per ROI under OUT_DIR/rois/,
    the map placed on the ROI's whole slice under OUT_DIR/slices/ (resized
    to square pixels), ``cam_<split>.json`` (scores, prediction and box of
    each ROI) and ``contact_sheet_<split>.png`` (rows: true class x
    correct/wrong). A ROI is predicted positive when its positive-class
    probability is at or above the threshold, as in tools/test.py::

        python tools/vis_cam.py configs/stbsm/mvitv2_stbsm.py best.pth \
            --split val --data-root data/spider_prepared --method gradcam++ \
            --threshold-file work_dirs/mvitv2_stbsm/val/threshold.json
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from mmengine.config import DictAction


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw Grad-CAM maps of a classifier of T2-weighted '
        'lesion crops.')
    parser.add_argument('config', help='model config, e.g. '
                        'configs/stbsm/resnet34_stbsm.py')
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--image', help='one crop PNG to explain')
    source.add_argument('--split', help='split of a prepared dataset to '
                        'explain, e.g. val or external (needs --data-root)')

    parser.add_argument('--data-root', help='prepared dataset folder '
                        '(annotations/<split>.json, manifest.json, crops/)')
    parser.add_argument(
        '--target-layer',
        help='dotted layer name, e.g. backbone.layer4.2 (default: the last '
        'feature layer of the backbone)')
    parser.add_argument('--method', choices=['gradcam', 'gradcam++'],
                        default='gradcam', help='CAM method (default: '
                        'gradcam)')
    parser.add_argument(
        '--target-class',
        type=int,
        help='class index to explain (default: the predicted class)')
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument(
        '--threshold',
        type=parse_threshold,
        help='decision threshold on the positive-class probability, in '
        '[0, 1] (default: the config\'s test_evaluator threshold)')
    threshold.add_argument(
        '--threshold-file',
        help='threshold.json written by tools/test.py --threshold youden; '
        'its threshold and positive class are applied')
    parser.add_argument('--out-dir', default='work_dirs/cam',
                        help='output folder (default: work_dirs/cam)')
    parser.add_argument('--alpha', type=float, default=0.4,
                        help='weight of the colour map in the overlay, 0 to '
                        '1 (default: 0.4)')
    parser.add_argument(
        '--max-columns',
        type=int,
        default=8,
        help='ROIs per row of the contact sheet (default: 8)')
    parser.add_argument('--device', default='cpu',
                        help='torch device (default: cpu)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')

    args = parser.parse_args(argv)
    if args.split and not args.data_root:
        parser.error('--split needs --data-root (a folder written by '
                     'tools/prepare_data.py).')
    if args.max_columns < 1:
        parser.error(f'--max-columns={args.max_columns} must be at least 1.')
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f'--alpha={args.alpha} must be between 0 and 1.')
    return args


def parse_threshold(value: str) -> float:
    """Return ``--threshold`` as a float in [0, 1]."""
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(
            f'invalid threshold {value!r}: give a number in [0, 1], e.g. 0.5')
    return number


def decision_rule(args: argparse.Namespace,
                  cfg) -> Tuple[float, Union[str, int], str]:
    """Return the threshold, the positive class and where they came from.

    ``--threshold-file`` sets both. Otherwise the positive class, and the
    threshold unless ``--threshold`` gives one, come from the config's
    ``DiagnosisMetric`` in ``test_evaluator`` (defaults 0.5 and class 0).
    """
    if args.threshold_file:
        from stbsm_mm.evaluation import read_threshold_json
        try:
            record = read_threshold_json(args.threshold_file)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f'error: {error}')
        return (record['threshold'], record['positive_class'],
                args.threshold_file)

    evaluator = cfg.get('test_evaluator') or {}
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        metrics = evaluator['metrics']
        metrics = metrics if isinstance(metrics, list) else [metrics]
    diagnosis = next((metric for metric in metrics
                      if metric and metric.get('type') == 'DiagnosisMetric'),
                     {})
    positive_class = diagnosis.get('positive_class', 0)
    if args.threshold is not None:
        return args.threshold, positive_class, '--threshold'
    return (float(diagnosis.get('threshold', 0.5)), positive_class,
            'test_evaluator of the config')


def positive_index_of(positive_class, classes: List[str],
                      source: str) -> int:
    """Resolve the positive class (name or index) against ``classes``."""
    from stbsm_mm.evaluation import resolve_positive_index

    if not classes and positive_class in (0, 1):
        # NOTE: without class names (a checkpoint that stores none, with
        # --image) an index is taken as given and a name is rejected.
        return int(positive_class)
    try:
        return resolve_positive_index(positive_class, classes)
    except ValueError as error:
        raise SystemExit(f'error: positive class from {source}: {error}')


def predict_label(scores, positive_index: int, threshold: float) -> int:
    """Return the class called at ``threshold`` from one ROI's scores."""
    from stbsm_mm.evaluation import predict_labels

    return int(predict_labels([list(scores)], positive_index, threshold)[0])


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from mmengine.logging import MMLogger

    from stbsm_mm.visualization import CAMExplainer

    logger = MMLogger.get_instance('stbsm_vis_cam', log_level='INFO')
    if not Path(args.checkpoint).is_file():
        logger.error(f'Checkpoint {args.checkpoint} not found.')
        return 1
    out_dir = Path(args.out_dir)

    try:
        explainer = CAMExplainer.from_config(
            args.config, args.checkpoint, device=args.device,
            cfg_options=args.cfg_options, target_layer=args.target_layer,
            method=args.method)
    except ValueError as error:
        logger.error(str(error))
        return 1
    logger.info(f'Grad-CAM method {args.method} at layer '
                f'{explainer.target_layer} of {args.config}')
    args.threshold, args.positive_class, args.threshold_source = (
        decision_rule(args, explainer.model._config))

    if args.image:
        return explain_image(explainer, Path(args.image), out_dir, args,
                             logger)
    return explain_split(explainer, Path(args.data_root), args.split, out_dir,
                         args, logger)


def explain_image(explainer, image: Path, out_dir: Path,
                  args: argparse.Namespace, logger) -> int:
    """Write the overlay of one crop."""
    if not image.is_file():
        logger.error(f'Crop {image} not found.')
        return 1
    meta = getattr(explainer.model, 'dataset_meta', None) or {}
    classes = list(meta.get('classes') or [])
    positive_index = positive_index_of(args.positive_class, classes,
                                       args.threshold_source)
    result = explain_at_threshold(explainer, image, args.target_class,
                                  positive_index, args.threshold)
    path = out_dir / f'{image.stem}_cam.png'
    _write_overlay(path, result, args.alpha)
    scores = ', '.join(f'{score:.3g}' for score in result['scores'])
    logger.info(f'Predicted class {result["pred_label"]} (class '
                f'{positive_index} when its probability is at or above '
                f'{args.threshold:g}; scores {scores}). Grad-CAM of class '
                f'{result["target_class"]} written to {path}')
    return 0


def explain_at_threshold(explainer, image, target_class: Optional[int],
                         positive_index: int, threshold: float) -> dict:
    """Explain a crop and call its class at the threshold.

    Without ``target_class`` the map explains the class so called, which
    may differ from the class with the highest score.
    """
    result = explainer.explain(image, target_class)
    predicted = predict_label(result['scores'], positive_index, threshold)
    if target_class is None and predicted != result['target_class']:
        result = explainer.explain(image, predicted)
    result['pred_label'] = predicted
    return result


def explain_split(explainer, data_root: Path, split: str, out_dir: Path,
                  args: argparse.Namespace, logger) -> int:
    """Write per-ROI overlays, a results file and a contact sheet."""
    from stbsm_mm.utils import atomic_write_json

    # Read the split and the manifest of the prepared dataset.
    annotation_path = data_root / 'annotations' / f'{split}.json'
    manifest_path = data_root / 'manifest.json'
    for path in (annotation_path, manifest_path):
        if not path.is_file():
            logger.error(f'{path} not found; pass --data-root of a folder '
                         'written by tools/prepare_data.py and one of its '
                         'splits.')
            return 1
    annotation = json.loads(annotation_path.read_text())
    manifest = json.loads(manifest_path.read_text())
    classes = list(annotation.get('metainfo', {}).get(
        'classes', manifest.get('classes', [])))
    boxes = {roi['roi_id']: roi.get('box') for roi in manifest['rois']}
    slices = {roi['roi_id']: roi.get('slice') for roi in manifest['rois']}
    spacings = {roi['roi_id']: roi.get('source_spacing')
                for roi in manifest['rois']}
    if not any(slices.values()):
        logger.warning(
            f'{manifest_path} lists no whole slices, so maps are drawn on '
            'the crops only. Re-run tools/prepare_data.py into the same '
            'folder to add them; unchanged crops are kept.')
    samples = annotation['data_list']
    if not samples:
        logger.error(f'Split {split} of {data_root} has no ROIs.')
        return 1

    positive_index = positive_index_of(args.positive_class, classes,
                                       args.threshold_source)
    logger.info(f'A ROI is predicted {classes[positive_index]} when its '
                f'{classes[positive_index]} probability is at or above '
                f'{args.threshold:g} (from {args.threshold_source}).')

    # Explain each ROI and write its overlay.
    records = []
    for sample in samples:
        result = explain_at_threshold(explainer,
                                      data_root / sample['img_path'],
                                      args.target_class, positive_index,
                                      args.threshold)
        predicted = result['pred_label']
        overlay_path = out_dir / 'rois' / f'{sample["roi_id"]}.png'
        _write_overlay(overlay_path, result, args.alpha)
        slice_overlay = None
        box = boxes.get(sample['roi_id'])
        slice_rel = slices.get(sample['roi_id'])
        if slice_rel and box:
            slice_overlay = out_dir / 'slices' / f'{sample["roi_id"]}.png'
            _write_slice_overlay(slice_overlay, data_root / slice_rel, box,
                                 result, args.alpha,
                                 spacings.get(sample['roi_id']))
        records.append({
            'roi_id': sample['roi_id'],
            'patient_id': sample.get('patient_id'),
            'gt_label': int(sample['gt_label']),
            'pred_label': predicted,
            'correct': predicted == int(sample['gt_label']),
            'cam_class': result['target_class'],
            'scores': [float(score) for score in result['scores']],
            'box': boxes.get(sample['roi_id']),
            'overlay': overlay_path.relative_to(out_dir).as_posix(),
            'slice_overlay': slice_overlay.relative_to(out_dir).as_posix()
            if slice_overlay else None,
        })
    accuracy = sum(record['correct'] for record in records) / len(records)
    logger.info(f'Explained {len(records)} ROIs of split {split} '
                f'(accuracy {accuracy:.3f}); overlays in {out_dir / "rois"}')

    # Write the results and the contact sheet.
    atomic_write_json(out_dir / f'cam_{split}.json', {
        'config': str(args.config),
        'checkpoint': str(args.checkpoint),
        'method': args.method,
        'target_layer': explainer.target_layer,
        'classes': classes,
        'positive_class': classes[positive_index],
        'threshold': args.threshold,
        'threshold_source': args.threshold_source,
        'rois': records,
    })
    sheet_path = out_dir / f'contact_sheet_{split}.png'
    write_contact_sheet(sheet_path, records, classes, out_dir,
                        args.max_columns, title=f'{split}: '
                        f'{Path(args.config).stem}, {args.method}')
    logger.info(f'Contact sheet written to {sheet_path}')
    return 0


def write_contact_sheet(path: Path, records: List[dict], classes: List[str],
                        out_dir: Path, max_columns: int, title: str) -> None:
    """Draw overlays in rows of true class x correct/wrong prediction."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image

    from stbsm_mm.utils import atomic_writer

    # One row per true class and verdict, with at most max_columns ROIs.
    rows: Dict[tuple, List[dict]] = {}
    totals: Dict[tuple, int] = {}
    for index in range(len(classes)):
        for correct in (True, False):
            selected = [
                record for record in records
                if record['gt_label'] == index and record['correct'] == correct
            ]
            rows[(index, correct)] = selected[:max_columns]
            totals[(index, correct)] = len(selected)
    columns = max(1, max(len(row) for row in rows.values()))


    figure, axes = plt.subplots(
        len(rows), columns, squeeze=False,
        figsize=(1.8 * columns + 1.2, 2.0 * len(rows)))
    for row_index, ((label, correct), row) in enumerate(rows.items()):
        for column in range(columns):
            axis = axes[row_index][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(row_label(classes[label], correct, len(row),
                                          totals[(label, correct)]))
            if column >= len(row):
                # The first column keeps its frame for the row label.
                if column > 0:
                    axis.axis('off')
                continue
            record = row[column]
            with Image.open(out_dir / record['overlay']) as image:
                axis.imshow(image.convert('RGB'))
            score = record['scores'][record['pred_label']]
            axis.set_title(f'{record["roi_id"]}\n'
                           f'{classes[record["pred_label"]]} {score:.2f}',
                           fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_writer(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)


def row_label(class_name: str, correct: bool, shown: int, total: int) -> str:
    """Return a contact-sheet row label, e.g. ``'SM\\nwrong (8 of 20 shown)'``."""
    verdict = 'correct' if correct else 'wrong'
    count = f'{shown} of {total} shown' if shown < total else f'{total}'
    return f'{class_name}\n{verdict} ({count})'


def _write_overlay(path: Path, result: dict, alpha: float) -> None:
    import cv2

    from stbsm_mm.utils import atomic_writer
    from stbsm_mm.visualization import overlay

    rgb = overlay(result['image'], result['cam'], alpha=alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f'Failed to write the overlay {path}.')


def _write_slice_overlay(path: Path, slice_path: Path, box: List[int],
                         result: dict, alpha: float,
                         spacing: Optional[List[float]] = None) -> None:
    """Write the crop's map placed at its box on the whole slice.

    With the slice's ``(x, y)`` spacing the overlay is resized to square
    pixels, as the crops are. Without it the slice's pixel grid is kept.
    """
    import cv2

    from stbsm_mm.utils import atomic_writer
    from stbsm_mm.visualization import place_on_slice
    from stbsm_mm.visualization.cam import to_square_pixels

    whole = cv2.imread(str(slice_path), cv2.IMREAD_GRAYSCALE)
    if whole is None:
        raise OSError(f'Failed to read the slice {slice_path}; re-run '
                      'tools/prepare_data.py into the same folder.')
    rgb = place_on_slice(whole, result['cam'], box, alpha=alpha)
    if spacing:
        rgb = to_square_pixels(rgb, spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f'Failed to write the overlay {path}.')


if __name__ == '__main__':
    sys.exit(main())
