"""Write the results of ``stbsm-infer``: JSON summary, HTML page, images.

Output layout::

    OUT_DIR/
      summary.json                 probabilities per ROI, per patient, per
                                   model and their mean; the research notice
      report.html                  one self-contained page (images embedded)
      slice_rois.png               the normalised slice with the ROI boxes
      crops/<roi>.png              the crop each model classified
      cam/<roi>__<model>.png       Grad-CAM overlay on the crop
      cam/<roi>__<model>_slice.png the same map placed on the slice

The two slice images are resized to square pixels with the slice's
spacing, as the crops are, so they show the anatomy in its true
proportions. ``box`` in the summary stays in the slice's own pixels.

The folder is written under a temporary name next to ``OUT_DIR`` and
renamed into place when complete, so ``OUT_DIR`` never contains a mix of
two runs. No DICOM header value is written: the patient is named by the
``patient_id`` the user gives, and the input by its checksum.
"""
import base64
import html
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Union

import cv2
import numpy as np

from ..utils.fileio import atomic_write_json, atomic_write_text, atomic_writer
from ..version import __version__
from .errors import InferenceError
from .predict import PatientPrediction, patient_summary, roi_summaries
from .preprocess import PreparedSlice

PathLike = Union[str, Path]

TOOL_NAME = 'stbsm-infer'
SUMMARY_NAME = 'summary.json'
REPORT_NAME = 'report.html'
CAM_ALL_ZERO_NOTE = (
    'Grad-CAM map is zero everywhere for this model and ROI: no region '
    'raised the class score')
RESEARCH_NOTICE = (
    'FOR RESEARCH USE ONLY. NOT A MEDICAL DEVICE. These probabilities come '
    'from a research model and have not been validated for clinical use; '
    'they must not be used to diagnose, treat or manage any patient.')


def build_summary(prediction: PatientPrediction, prepared: PreparedSlice,
                  models: List[dict], patient_id: str,
                  input_record: dict, preprocessing: dict) -> dict:
    """Assemble the JSON summary of one run.

    Args:
        prediction: The models' results.
        prepared: The preprocessed slice and crops.
        models: One entry per model (``name``, checkpoint, threshold,
            ...), in ``--model`` order.
        patient_id: The pseudonym the user gave for the patient.
        input_record: Format, checksum, slice choice and spacing of the
            input (no path and no header value).
        preprocessing: The preprocessing parameters applied.

    Returns:
        dict: The summary; see the module docstring for the files it names.
    """
    rois = roi_summaries(prediction)
    for entry, roi in zip(rois, prepared.rois):
        entry.update({
            'kind': roi.kind,
            'annotation_sha256': roi.annotation_sha256,
            'box': list(roi.box),
            'crop': f'crops/{roi.name}.png',
            'crop_size': [int(roi.crop.shape[1]), int(roi.crop.shape[0])],
            'crop_spacing_mm': list(roi.crop_spacing),
        })
        for name, model_entry in entry['models'].items():
            model_entry['cam_overlay'] = _cam_path(roi.name, name)
            model_entry['cam_on_slice'] = _cam_path(roi.name, name, '_slice')
    return {
        'notice': RESEARCH_NOTICE,
        'tool': TOOL_NAME,
        'stbsm_mm_version': __version__,
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'patient_id': patient_id,
        'input': input_record,
        'preprocessing': preprocessing,
        'classes': list(prediction.classes),
        'positive_class': prediction.classes[prediction.positive_index],
        'decision_rule': (
            'A ROI or patient is called the positive class when its '
            'positive-class probability is at or above the threshold.'),
        'models': models,
        'ensemble_threshold': prediction.ensemble_threshold,
        'patient': patient_summary(prediction),
        'rois': rois,
    }


def _cam_path(roi: str, model: str, suffix: str = '') -> str:
    return f'cam/{roi}__{model}{suffix}.png'


def check_out_dir(out_dir: PathLike, overwrite: bool) -> None:
    """Reject an output folder that contains files, unless ``overwrite``.

    With ``overwrite`` only an earlier ``stbsm-infer`` result may be
    replaced; a folder with other files is rejected, so that no unrelated
    file is deleted.

    Raises:
        InferenceError: If the folder cannot be used.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InferenceError(f'--out-dir {out_dir} is a file; pass a folder.')
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise InferenceError(
            f'--out-dir {out_dir} already contains files (an earlier '
            'result?). Pass another folder, or --overwrite to replace an '
            'earlier stbsm-infer result.')
    if not (out_dir / SUMMARY_NAME).is_file():
        raise InferenceError(
            f'--out-dir {out_dir} contains files but no {SUMMARY_NAME}, so '
            'it is not an stbsm-infer result; --overwrite replaces only '
            'those. Pass an empty or new folder.')


def write_outputs(out_dir: PathLike, summary: dict,
                  prediction: PatientPrediction, prepared: PreparedSlice,
                  overwrite: bool = False, alpha: float = 0.4) -> Path:
    """Write the summary, the HTML page and the images to ``out_dir``.

    Args:
        out_dir: Output folder; created if missing.
        summary: From :func:`build_summary`.
        prediction: The models' results, for the overlays.
        prepared: The slice and crops.
        overwrite: Replace an earlier ``stbsm-infer`` result.
        alpha: Weight of the colour map in the overlays (for the caption).

    Returns:
        Path: The output folder.

    Examples:
        >>> write_outputs('out/patient', summary, prediction,
        ...               prepared)  # doctest: +SKIP
        PosixPath('out/patient')
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.',
                                    suffix='.tmp', dir=out_dir.parent))
    try:
        # Images first, then the summary and the page that name them.
        images = _images(summary, prediction, prepared)
        for relative, image in images.items():
            _write_png(staging / relative, image)
        atomic_write_json(staging / SUMMARY_NAME, summary)
        atomic_write_text(staging / REPORT_NAME,
                          render_html(summary, images, alpha))
        os.chmod(staging, 0o755)
        _replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _images(summary: dict, prediction: PatientPrediction,
            prepared: PreparedSlice) -> Dict[str, np.ndarray]:
    """Return every image of the result, by relative path.

    Crops stay grayscale (rows x columns), as ``tools/prepare_data.py``
    writes them. The other images are RGB.
    """
    images = {'slice_rois.png': draw_roi_boxes(prepared)}
    for entry, roi in zip(summary['rois'], prepared.rois):
        images[entry['crop']] = roi.crop
        for name, output in prediction.outputs[roi.name].items():
            images[entry['models'][name]['cam_overlay']] = output.crop_overlay
            images[entry['models'][name]['cam_on_slice']] = (
                output.slice_overlay)
    return images


def draw_roi_boxes(prepared: PreparedSlice) -> np.ndarray:
    """Draw each ROI's crop box and name on the normalised slice (RGB).

    The slice is first resized to square pixels with its spacing, and the
    boxes are scaled to match.
    """
    from ..visualization.cam import to_square_pixels

    height, width = prepared.image.shape[:2]
    gray = to_square_pixels(prepared.image, prepared.spacing)
    scale_x = gray.shape[1] / width
    scale_y = gray.shape[0] / height
    rgb = np.repeat(gray[..., None], 3, axis=2).copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for roi in prepared.rois:
        x0, x1 = (round(value * scale_x) for value in roi.box[0::2])
        y0, y1 = (round(value * scale_y) for value in roi.box[1::2])
        cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), (255, 200, 0),
                      thickness)
        cv2.putText(rgb, roi.name, (x0, max(12, y0 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (255, 200, 0),
                    thickness, cv2.LINE_AA)
    return rgb


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """Convert RGB to OpenCV's BGR order; grayscale is returned as is."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as tmp:
        if not cv2.imwrite(str(tmp), _to_bgr(image)):
            raise OSError(f'Failed to write the image {path}.')


def _replace_folder(staging: Path, out_dir: Path) -> None:
    """Move the finished staging folder to ``out_dir``.

    An earlier result is renamed aside first and deleted only after the new
    one is in place.
    """
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', suffix='.old',
                                dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _data_uri(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode('.png', _to_bgr(image))
    if not ok:
        raise OSError('Failed to encode an image as PNG.')
    return 'data:image/png;base64,' + base64.b64encode(
        encoded.tobytes()).decode('ascii')


def render_html(summary: dict, images: Dict[str, np.ndarray],
                alpha: float = 0.4) -> str:
    """Render the one-page report; every image is embedded as base64.

    The page shows the research-use notice at the top, the patient-level
    probabilities, the slice with the ROI boxes, and per ROI a table of the
    probabilities and the Grad-CAM overlay of each model.

    Args:
        summary: From :func:`build_summary`.
        images: Images by the relative paths the summary names.
        alpha: Weight of the colour map in the overlays (for the caption).

    Returns:
        str: The HTML document.
    """
    escape = html.escape
    classes = summary['classes']
    models = [model['name'] for model in summary['models']]
    parts = [
        '<!DOCTYPE html>',
        '<html lang="en"><head><meta charset="utf-8">',
        f'<title>{escape(TOOL_NAME)}: {escape(summary["patient_id"])}</title>',
        '<style>',
        'body{font-family:sans-serif;margin:1.5em;max-width:70em}',
        '.notice{border:3px solid #b00;background:#fee;color:#700;'
        'padding:.8em;font-weight:bold;font-size:1.1em}',
        'table{border-collapse:collapse;margin:.5em 0}',
        'td,th{border:1px solid #999;padding:.25em .6em;text-align:right}',
        'th:first-child,td:first-child{text-align:left}',
        'figure{display:inline-block;margin:.3em;text-align:center;'
        'max-width:20em}',
        'img{image-rendering:pixelated}',
        '</style></head><body>',
        f'<p class="notice" id="research-notice">{escape(RESEARCH_NOTICE)}'
        '</p>',
        f'<h1>Patient {escape(summary["patient_id"])}</h1>',
        f'<p>Positive class: <b>{escape(summary["positive_class"])}</b>. '
        f'{escape(summary["decision_rule"])} Patient probabilities are the '
        'mean of the ROI probabilities.</p>',
        '<h2>Patient</h2>',
        _probability_table(summary['patient'], classes, models,
                           summary['positive_class']),
        '<h2>Slice and ROIs</h2>',
        f'<img alt="slice with ROI boxes" style="max-width:100%;'
        f'max-height:40em" src="{_data_uri(images["slice_rois.png"])}">',
    ]
    for roi in summary['rois']:
        parts.append(f'<h2>ROI {escape(roi["roi"])}</h2>')
        parts.append(_probability_table(roi, classes, models,
                                        summary['positive_class']))
        parts.append(
            f'<figure><img alt="crop {escape(roi["roi"])}" height="200" '
            f'src="{_data_uri(images[roi["crop"]])}"><figcaption>crop'
            '</figcaption></figure>')
        for name in models:
            path = roi['models'][name]['cam_overlay']
            cam_class = roi['models'][name]['cam_class']
            note = ''
            if roi['models'][name].get('cam_all_zero'):
                note = (f'<br><b class="cam-all-zero">'
                        f'{escape(CAM_ALL_ZERO_NOTE)}</b>')
            parts.append(
                f'<figure><img alt="Grad-CAM {escape(name)}" height="200" '
                f'src="{_data_uri(images[path])}"><figcaption>'
                f'{escape(name)}: Grad-CAM of {escape(cam_class)}{note}'
                '</figcaption></figure>')
    parts.extend([
        '<h2>Models</h2><table><tr><th>model</th><th>threshold</th>'
        '<th>checkpoint SHA-256</th></tr>',
        *[f'<tr><td>{escape(model["name"])}</td>'
          f'<td>{model["threshold"]:g}</td>'
          f'<td>{escape(model["checkpoint_sha256"][:16])}…</td></tr>'
          for model in summary['models']],
        '</table>',
        f'<p>Grad-CAM overlays blend the map with weight {alpha:g}. '
        f'{escape(TOOL_NAME)} {escape(summary["stbsm_mm_version"])}, '
        f'{escape(summary["created"])}.</p>',
        f'<p class="notice">{escape(RESEARCH_NOTICE)}</p>',
        '</body></html>',
    ])
    return '\n'.join(parts) + '\n'


def format_probability(value: float) -> str:
    """Format a probability so that it can be compared with a threshold.

    Values from 0.001 to 1 get three decimals. Smaller values get three
    significant digits in scientific notation, so that 2e-7 does not show
    as 0.000 next to a threshold of 2.26e-7.

    NOTE: values within 0.0005 of 1 show as 1.000, so a threshold above
    0.9995 can still look equal to the probability.

    Examples:
        >>> format_probability(0.8125), format_probability(2.04e-7)
        ('0.812', '2.04e-07')
    """
    value = float(value)
    if value != 0.0 and abs(value) < 1e-3:
        return f'{value:.2e}'
    return f'{value:.3f}'


def _probability_table(entry: dict, classes: List[str],
                       models: List[str], positive_class: str) -> str:
    escape = html.escape
    header = ''.join(f'<th>P({escape(name)})</th>' for name in classes)
    rows = [f'<table><tr><th>model</th>{header}<th>threshold</th>'
            '<th>predicted</th></tr>']
    labelled = [(name, entry['models'][name]) for name in models]
    labelled.append(('mean of models', entry['mean']))
    for name, values in labelled:
        cells = ''.join(
            f'<td>{format_probability(values["probabilities"][label])}</td>'
            for label in classes)
        threshold = values['threshold']
        predicted = values['predicted_class']
        if predicted is None:
            called = '(thresholds differ)'
        else:
            relation = '≥' if predicted == positive_class else '<'
            called = (f'{predicted} (P({positive_class}) {relation} '
                      f'{threshold:g})')
        rows.append(
            f'<tr><td>{escape(name)}</td>{cells}'
            f'<td>{"" if threshold is None else f"{threshold:g}"}</td>'
            f'<td>{escape(called)}</td></tr>')
    rows.append('</table>')
    return ''.join(rows)
