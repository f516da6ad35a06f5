"""Decision threshold chosen on one split and applied unchanged to another.

The threshold that maximises Youden's J (sensitivity + specificity - 1,
Youden 1950) is picked on the ROC curve of a split's saved predictions,
normally the internal validation split. ``threshold.json`` keeps it with the
split, positive class and checkpoint it came from, so that the external
test applies the same number instead of tuning a new one on the external
sites.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_curve

from .binary_figures import (SCORE_PREFIX, _check_classes,
                             compute_binary_figures, predict_labels,
                             read_predictions_csv, resolve_positive_index,
                             validate_threshold, write_metrics_json,
                             write_predictions_csv)

#: Name of the file that stores a chosen threshold.
THRESHOLD_FILE = 'threshold.json'

#: Keys of ``threshold.json``.
THRESHOLD_KEYS = ('threshold', 'method', 'split', 'positive_class',
                  'n_images', 'checkpoint_sha256')


def youden_threshold(labels: Any, positive_scores: Any) -> float:
    """Pick the threshold with the largest Youden's J on the ROC curve.

    Youden's J is sensitivity + specificity - 1. The candidates are the
    distinct positive-class scores, as returned by
    ``sklearn.metrics.roc_curve``, and an image is called positive when its
    score is at or above the threshold, as in
    :func:`~stbsm_mm.evaluation.predict_labels`. When several candidates
    reach the same J, the one closest to 0.5 is returned. When two of those
    are equally close to 0.5, the higher one is returned, which calls fewer
    images positive.

    Args:
        labels (array-like of bool or int, shape (N,)): 1 or ``True`` for
            an image of the positive class, 0 or ``False`` otherwise.
        positive_scores (array-like of float, shape (N,)): Positive-class
            probability of each image, in [0, 1].

    Returns:
        float: The threshold, one of the scores, in [0, 1].

    Raises:
        ValueError: If the inputs differ in length, a score lies outside
            [0, 1], a label is not 0 or 1, or only one class is present
            (then sensitivity or specificity is undefined).

    Examples:
        Both 0.8 and 0.35 reach J = 0.5, and 0.35 is closer to 0.5:

        >>> youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.35
    """
    labels, positive_scores = _check_binary_inputs(labels, positive_scores)
    n_positive = int(labels.sum())
    if n_positive in (0, len(labels)):
        present = 'positive' if n_positive else 'negative'
        raise ValueError(
            f'labels contain only {present} images ({len(labels)} of them), '
            f'so sensitivity + specificity is undefined and no Youden '
            f'threshold exists. Pick the threshold on a split with images of '
            f'both classes, e.g. the validation split.')

    false_positive_rate, true_positive_rate, candidates = roc_curve(
        labels, positive_scores, drop_intermediate=False)

    # The first candidate of roc_curve is +inf, which calls no image
    # positive (J = 0) and is no usable threshold.
    finite = np.isfinite(candidates)
    youden_j = (true_positive_rate - false_positive_rate)[finite]
    candidates = candidates[finite]

    best = np.flatnonzero(np.isclose(youden_j, youden_j.max(), rtol=0.0,
                                     atol=1e-12))
    distances = np.abs(candidates[best] - 0.5)
    closest = best[np.isclose(distances, distances.min(), rtol=0.0,
                              atol=1e-12)]
    return float(candidates[closest].max())


def youden_threshold_of_records(records: Sequence[Mapping[str, Any]],
                                classes: Sequence[str],
                                positive_class: str | int) -> float:
    """Pick the Youden threshold from rows of ``predictions.csv``.

    Args:
        records (Sequence[Mapping[str, Any]]): Rows as returned by
            :func:`~stbsm_mm.evaluation.read_predictions_csv`, each with
            ``label_index`` and ``score_<positive class>``.
        classes (Sequence[str]): The two class names in score-column order.
        positive_class (str | int): Name or index of the positive class.

    Returns:
        float: See :func:`youden_threshold`.

    Examples:
        >>> rows = [dict(label_index=0, score_STB=0.9, score_SM=0.1),
        ...         dict(label_index=1, score_STB=0.2, score_SM=0.8)]
        >>> youden_threshold_of_records(rows, ('STB', 'SM'), 'STB')
        0.9
    """
    classes = _check_classes(classes)
    positive_index = resolve_positive_index(positive_class, classes)
    column = SCORE_PREFIX + classes[positive_index]
    labels = [int(record['label_index']) == positive_index
              for record in records]
    scores = [float(record[column]) for record in records]
    return youden_threshold(labels, scores)


def apply_threshold(output_dir: str | os.PathLike,
                    threshold: float) -> dict[str, Any]:
    """Recompute a test output folder's calls and figures at a threshold.

    ``predictions.csv`` gets new ``pred_label`` values and ``metrics.json``
    is computed again from the saved scores with
    :func:`~stbsm_mm.evaluation.compute_binary_figures`, keeping its
    classes and positive class. Both files are replaced atomically.

    Args:
        output_dir (str | os.PathLike): Folder with ``predictions.csv`` and
            ``metrics.json`` as written by DiagnosisMetric.
        threshold (float): The new threshold, in [0, 1].

    Returns:
        dict[str, Any]: The new content of ``metrics.json``.

    Raises:
        FileNotFoundError: If either file is missing.
        ValueError: If ``threshold`` is not in [0, 1] or a file is invalid.

    Examples:
        >>> import json, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [dict(roi_id=f'r{i}', patient_id='p1', site=None,
        ...              label=('STB', 'SM')[i % 2], label_index=i % 2,
        ...              score_STB=s, score_SM=1 - s, pred_label='STB')
        ...         for i, s in enumerate([0.9, 0.6, 0.7, 0.2])]
        >>> _ = write_predictions_csv(folder / 'predictions.csv', rows)
        >>> _ = write_metrics_json(folder / 'metrics.json',
        ...                        {'classes': ['STB', 'SM'],
        ...                         'positive_class': 'STB'})
        >>> apply_threshold(folder, 0.65)['specificity']
        1.0
    """
    output_dir = Path(output_dir)
    threshold = validate_threshold(threshold)
    predictions_path = output_dir / 'predictions.csv'
    metrics_path = output_dir / 'metrics.json'
    for path in (predictions_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(
                f'{path} not found. Pass a folder written by tools/test.py.')

    old_figures = json.loads(metrics_path.read_text(encoding='utf-8'))
    classes = _check_classes(old_figures['classes'])
    positive_index = resolve_positive_index(old_figures['positive_class'],
                                            classes)
    records = read_predictions_csv(predictions_path)
    labels = np.array([record['label_index'] for record in records])
    scores = np.array([[record[SCORE_PREFIX + name] for name in classes]
                       for record in records])

    figures = compute_binary_figures(labels, scores, classes, positive_index,
                                     threshold=threshold)
    calls = predict_labels(scores, positive_index, threshold)
    for record, call in zip(records, calls):
        record['pred_label'] = classes[call]

    write_predictions_csv(predictions_path, records)
    write_metrics_json(metrics_path, figures)
    return figures


def write_threshold_json(path: str | os.PathLike, threshold: float,
                         split: str, positive_class: str, n_images: int,
                         checkpoint_sha256: str,
                         method: str = 'youden') -> Path:
    """Write ``threshold.json``, atomically.

    Args:
        path (str | os.PathLike): Output file. Its folder must exist.
        threshold (float): The chosen threshold, in [0, 1].
        split (str): Split whose predictions gave the threshold.
        positive_class (str): Name of the positive class.
        n_images (int): Number of images of that split.
        checkpoint_sha256 (str): SHA-256 of the checkpoint that scored them.
        method (str): How the threshold was chosen. Defaults to
            ``'youden'``.

    Returns:
        Path: The written file.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / 'threshold.json'
        >>> _ = write_threshold_json(path, 0.42, 'val', 'STB', 15, 'ab' * 32)
        >>> read_threshold_json(path)['threshold']
        0.42
    """
    record = {
        'threshold': validate_threshold(threshold),
        'method': str(method),
        'split': str(split),
        'positive_class': str(positive_class),
        'n_images': int(n_images),
        'checkpoint_sha256': str(checkpoint_sha256),
    }
    return write_metrics_json(path, record)


def read_threshold_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a file written by :func:`write_threshold_json`.

    Args:
        path (str | os.PathLike): A ``threshold.json``.

    Returns:
        dict[str, Any]: Its keys, :data:`THRESHOLD_KEYS`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not JSON, lacks a key, or its threshold
            is not a number in [0, 1].

    Examples:
        See :func:`write_threshold_json`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f'threshold file {path} not found. Write it first with '
            f'tools/test.py --threshold youden on the validation split.')
    try:
        record = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as error:
        raise ValueError(
            f'threshold file {path} is not valid JSON ({error}). Write it '
            f'again with tools/test.py --threshold youden.') from error

    if not isinstance(record, dict):
        raise ValueError(
            f'threshold file {path} must contain a JSON object with the keys '
            f'{list(THRESHOLD_KEYS)}, got {type(record).__name__}.')
    missing = [key for key in THRESHOLD_KEYS if key not in record]
    if missing:
        raise ValueError(
            f'threshold file {path} lacks the keys {missing}. Write it again '
            f'with tools/test.py --threshold youden.')

    value = record['threshold']
    is_number = (isinstance(value, numbers.Real)
                 and not isinstance(value, bool) and math.isfinite(value))
    if not is_number or not 0.0 <= value <= 1.0:
        raise ValueError(
            f'threshold file {path} has threshold {value!r}, but it must be '
            f'a number in [0, 1].')
    record['threshold'] = float(value)
    return record


def _check_binary_inputs(
        labels: Any, positive_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return labels as 0/1 ints and scores as floats, both of shape (N,)."""
    labels = np.asarray(labels)
    positive_scores = np.asarray(positive_scores, dtype=np.float64)
    if labels.ndim != 1 or positive_scores.ndim != 1:
        raise ValueError(
            f'labels and positive_scores must have shape (N,), got shapes '
            f'{labels.shape} and {positive_scores.shape}.')
    if len(labels) == 0:
        raise ValueError('labels is empty, but at least one image is needed.')
    if len(labels) != len(positive_scores):
        raise ValueError(
            f'labels and positive_scores must have one entry per image, got '
            f'{len(labels)} labels and {len(positive_scores)} scores.')

    if labels.dtype.kind not in 'biu' or not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f'labels must be 1 (or True) for the positive class and 0 (or '
            f'False) otherwise, got the values {np.unique(labels).tolist()}.')

    outside = ~((positive_scores >= 0.0) & (positive_scores <= 1.0))
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f'positive_scores must be probabilities in [0, 1], got '
            f'positive_scores[{index}] = {positive_scores[index]}.')
    return labels.astype(np.int64), positive_scores
