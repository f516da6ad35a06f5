"""Command line of ``stbsm-infer``: classify the ROIs of a new patient.

Examples:
    A DICOM series with two Labelme ROIs and two trained models::

        stbsm-infer dicom/100_t2 --roi ivd3.json --roi ivd4.json \
            --model work_dirs/resnet34_stbsm --model work_dirs/mvitv2_stbsm \
            --patient-id case-017 --out-dir results/case-017

    A PNG export (no spacing in the file) and a quick rectangle::

        stbsm-infer slice.png --spacing 0.39,0.63 --box 220,556,290,683 \
            --model work_dirs/resnet34_stbsm --out-dir results/case-018
"""
import argparse
import hashlib
import sys
from pathlib import Path
from typing import List, Optional

from .errors import InferenceError

LOGGER_NAME = 'stbsm_infer'
FORMATS = {
    '.nii': 'nifti', '.nii.gz': 'nifti', '.mha': 'mha', '.mhd': 'mha',
    '.nrrd': 'nrrd', '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg',
    '.bmp': 'bmp', '.tif': 'tiff', '.tiff': 'tiff', '.dcm': 'dicom'
}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``stbsm-infer``."""
    parser = argparse.ArgumentParser(
        prog='stbsm-infer',
        description='Classify the ROIs of one patient\'s sagittal T2 slice '
        'with trained stbsm-mm models, preprocessing the slice as the '
        'models\' training crops were. For research use only; not a '
        'medical device.')

    # The slice and its ROIs.
    parser.add_argument(
        'image',
        help='the slice: a DICOM folder (one series), or a NIfTI, MHA, '
        'NRRD or PNG file')
    parser.add_argument(
        '--roi', action='append', default=[], metavar='LABELME_JSON',
        help='Labelme file outlining one ROI on the slice (repeatable)')
    parser.add_argument(
        '--box', action='append', default=[], metavar='X0,Y0,X1,Y1',
        help='rectangle ROI in slice pixels, x1 and y1 exclusive '
        '(repeatable); the recorded crop margin is added')
    slice_choice = parser.add_mutually_exclusive_group()
    slice_choice.add_argument(
        '--slice-index', type=int,
        help='0-based slice of a volume or multi-slice series')
    slice_choice.add_argument(
        '--instance-number', type=int,
        help='DICOM InstanceNumber of the slice in a DICOM folder')
    parser.add_argument(
        '--spacing', metavar='ROW,COL',
        help='pixel spacing in mm (row spacing, column spacing, as DICOM '
        'PixelSpacing) for files that store none, such as PNG')

    # The models and their thresholds.
    parser.add_argument(
        '--model', action='append', required=True,
        metavar='WORK_DIR_OR_CKPT',
        help='training work_dir (its best checkpoint, else the last) or '
        'a .pth file in one (repeatable; the mean over models is reported)')
    parser.add_argument(
        '--threshold-file', action='append', default=[], metavar='JSON',
        help='threshold.json written by tools/test.py --threshold; one for '
        'all models, or one per --model in the same order (default: the '
        'config\'s test_evaluator.threshold)')
    parser.add_argument(
        '--ensemble-threshold', type=float,
        help='threshold applied to the mean over models (default: the '
        'models\' threshold when they share one; else no class is called '
        'for the mean)')

    # The outputs.
    parser.add_argument(
        '--patient-id', default='patient',
        help='pseudonym of the patient written to the outputs (default: '
        'patient); header values of the input are never written')
    parser.add_argument('--out-dir', required=True,
                        help='output folder; must be new or empty')
    parser.add_argument(
        '--overwrite', action='store_true',
        help='replace an earlier stbsm-infer result in --out-dir')

    # Grad-CAM and the device.
    parser.add_argument(
        '--target-layer',
        help='Grad-CAM layer, e.g. backbone.layer4.2 (default: the last '
        'feature layer of each backbone)')
    parser.add_argument('--cam-method', choices=['gradcam', 'gradcam++'],
                        default='gradcam',
                        help='Grad-CAM method (default: gradcam)')
    parser.add_argument('--alpha', type=float, default=0.4,
                        help='weight of the colour map in the overlays, 0 to '
                        '1 (default: 0.4)')
    parser.add_argument('--device', default='cpu',
                        help='torch device (default: cpu)')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``stbsm-infer``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv``).

    Returns:
        int: 0 on success. An invalid input, model or option raises
        ``SystemExit`` with ``error: <reason>``, which exits with status 1
        and prints the reason on stderr.

    Examples:
        >>> main(['slice.nii.gz', '--box', '10,10,60,60', '--model',
        ...       'work_dirs/resnet34_stbsm', '--out-dir', 'out']
        ...      )  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f'--alpha={args.alpha} must be between 0 and 1.')

    from ..io.image import SliceReadError
    from ..io.labelme import LabelmeError
    from ..engine.checkpoint import UntrustedCheckpointError

    try:
        out_dir = run(args)
    except (InferenceError, SliceReadError, LabelmeError,
            UntrustedCheckpointError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}') from None
    sys.stdout.write(f'Results written to {out_dir} (summary.json, '
                     'report.html). For research use only; not a medical '
                     'device.\n')
    return 0


def run(args: argparse.Namespace) -> Path:
    """Check the inputs, preprocess, classify and write the outputs."""
    from mmengine.logging import MMLogger

    from ..evaluation.binary_figures import validate_threshold
    from .models import load_trained_model, unique_names
    from .predict import predict_patient
    from .preprocess import (check_same_preprocessing, load_roi_inputs,
                             parse_box, parse_spacing, prepare_patient_slice)
    from .report import build_summary, check_out_dir, write_outputs

    if MMLogger.check_instance_created(LOGGER_NAME):
        logger = MMLogger.get_instance(LOGGER_NAME)
    else:
        logger = MMLogger.get_instance(LOGGER_NAME, log_level='INFO')

    # Check the options and the output folder before any slow step.
    check_out_dir(args.out_dir, args.overwrite)
    boxes = [parse_box(text) for text in args.box]
    spacing = parse_spacing(args.spacing) if args.spacing else None
    threshold_files = _threshold_files(args.threshold_file, len(args.model))
    if args.ensemble_threshold is not None:
        try:
            validate_threshold(args.ensemble_threshold)
        except ValueError as error:
            raise InferenceError(f'--ensemble-threshold: {error}') from error
    if not args.patient_id.strip():
        raise InferenceError('--patient-id is empty; pass a pseudonym such '
                             'as case-017.')
    if not Path(args.image).exists():
        raise InferenceError(
            f'{args.image}: no such file or folder. Pass a DICOM folder or '
            'a NIfTI, MHA or PNG file.')

    # The models and their shared preprocessing.
    models = [
        load_trained_model(path, threshold_file)
        for path, threshold_file in zip(args.model, threshold_files)
    ]
    for model, name in zip(models, unique_names([m.name for m in models])):
        model.name = name
    preprocessing = check_same_preprocessing(
        [(model.name, model.preprocessing) for model in models])

    # The slice and the ROI crops.
    rois = load_roi_inputs(args.roi, boxes)
    prepared = prepare_patient_slice(args.image, rois, preprocessing,
                                     args.slice_index, args.instance_number,
                                     spacing)
    logger.info(f'Prepared {len(prepared.rois)} ROI crop(s) of the slice.')

    # Classify, explain and write.
    prediction = predict_patient(models, prepared, args.device,
                                 args.target_layer, args.cam_method,
                                 args.alpha, args.ensemble_threshold)
    summary = build_summary(
        prediction, prepared,
        [dict(name=model.name, **model.describe()) for model in models],
        args.patient_id, _input_record(args, prepared),
        preprocessing.to_dict())
    return write_outputs(args.out_dir, summary, prediction, prepared,
                         args.overwrite, args.alpha)


def _threshold_files(files: List[str], n_models: int) -> List[Optional[str]]:
    if not files:
        return [None] * n_models
    if len(files) == 1:
        return files * n_models
    if len(files) != n_models:
        raise InferenceError(
            f'{len(files)} --threshold-file options for {n_models} models; '
            'pass one for all models or one per --model, in order.')
    return list(files)


def _input_record(args: argparse.Namespace, prepared) -> dict:
    """Describe the input without its path or any header value."""
    from ..utils.fileio import sha256_of_file

    path = Path(args.image)
    files = sorted(item for item in path.rglob('*')
                   if item.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for item in files:
        digest.update(sha256_of_file(item).encode())
    name = path.name.lower()
    suffix = '.nii.gz' if name.endswith('.nii.gz') else path.suffix.lower()
    col, row = prepared.spacing
    return {
        'format': 'dicom' if path.is_dir() else FORMATS.get(suffix, suffix),
        'sha256': digest.hexdigest(),
        'n_files': len(files),
        'slice_index': args.slice_index,
        'instance_number': args.instance_number,
        'size': [int(prepared.image.shape[1]), int(prepared.image.shape[0])],
        'spacing_mm': {'row': row, 'col': col},
        'spacing_source': prepared.spacing_source,
    }
