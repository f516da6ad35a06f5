"""Figures of a two-class diagnosis (STB vs SM) and the files that keep them.

The figures come from scikit-learn. This module only validates the inputs,
applies the decision threshold, names each figure in the field's words and
turns scikit-learn's NaN for an undefined figure into ``None`` so that the
result is plain JSON.
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score)

from ..utils.fileio import open_atomic

#: Largest distance of a score row's sum from 1 that still counts as a
#: probability row. It allows for float32 softmax rounding.
ROW_SUM_TOLERANCE = 1e-3

#: Columns of ``predictions.csv`` that come before the ``score_<class>`` ones.
ID_COLUMNS = ('roi_id', 'patient_id', 'site', 'label', 'label_index')

#: Column of ``predictions.csv`` that comes after the ``score_<class>`` ones.
PREDICTION_COLUMN = 'pred_label'

#: Prefix of the per-class score columns of ``predictions.csv``.
SCORE_PREFIX = 'score_'


def validate_threshold(threshold: float) -> float:
    """Check a decision threshold and return it as a float.

    Args:
        threshold (float): Score of the positive class at or above which an
            image is called positive. It must lie in [0, 1].

    Returns:
        float: The threshold.

    Raises:
        ValueError: If ``threshold`` is not a number in [0, 1].

    Examples:
        >>> validate_threshold(0.5)
        0.5
    """
    is_number = (isinstance(threshold, numbers.Real)
                 and not isinstance(threshold, bool))
    if not is_number or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(
            f'threshold must be a number in [0, 1], got {threshold!r}. Pass '
            'the positive-class score at or above which an image is called '
            'positive, e.g. 0.5.')
    return float(threshold)


def resolve_positive_index(positive_class: str | int,
                           classes: Sequence[str]) -> int:
    """Return the index of the positive class in ``classes``.

    Args:
        positive_class (str | int): Class name, or index into ``classes``.
        classes (Sequence[str]): The two class names in score-column order.

    Returns:
        int: 0 or 1.

    Raises:
        ValueError: If ``classes`` is not two distinct names, or if
            ``positive_class`` is neither one of them nor a valid index.

    Examples:
        >>> resolve_positive_index('SM', ('STB', 'SM'))
        1
    """
    classes = _check_classes(classes)

    if isinstance(positive_class, str):
        if positive_class not in classes:
            raise ValueError(
                f'positive_class {positive_class!r} is not one of the '
                f'classes {classes}. Pass one of these names or its index.')
        return classes.index(positive_class)

    is_index = (isinstance(positive_class, numbers.Integral)
                and not isinstance(positive_class, bool))
    if not is_index or not 0 <= int(positive_class) < len(classes):
        raise ValueError(
            f'positive_class must be a class name or an index in '
            f'[0, {len(classes) - 1}], got {positive_class!r}. The classes '
            f'are {classes}.')
    return int(positive_class)


def predict_labels(scores: Any, positive_index: int,
                   threshold: float = 0.5) -> np.ndarray:
    """Call each image positive or negative from its positive-class score.

    Args:
        scores (array-like): Class probabilities of shape (N, 2).
        positive_index (int): Column of the positive class, 0 or 1.
        threshold (float): An image whose positive-class score is at or
            above this value is called positive. Defaults to 0.5.

    Returns:
        np.ndarray: Predicted class indices of shape (N,).

    Examples:
        >>> predict_labels([[0.5, 0.5], [0.2, 0.8]], positive_index=0)
        array([0, 1])
    """
    scores = _check_scores(scores)
    threshold = validate_threshold(threshold)
    if positive_index not in (0, 1):
        raise ValueError(
            f'positive_index must be 0 or 1, got {positive_index!r}.')

    negative_index = 1 - positive_index
    is_positive = scores[:, positive_index] >= threshold
    return np.where(is_positive, positive_index, negative_index)


def compute_binary_figures(labels: Any,
                           scores: Any,
                           classes: Sequence[str],
                           positive_class: str | int,
                           threshold: float = 0.5) -> dict[str, Any]:
    """Compute the diagnostic figures of a two-class classifier.

    An image is called the positive class when its positive-class score is
    at or above ``threshold`` and the other class otherwise. All figures are
    fractions in [0, 1] computed with scikit-learn.

    Edge cases follow scikit-learn with ``zero_division=np.nan`` and report
    an undefined figure as ``None``, never as 0:

    * precision, sensitivity, specificity or NPV with a zero denominator is
      ``None``, e.g. specificity when no negative image is present. F1 is
      ``None`` only when the positive class has no true and no predicted
      image. If the positive class has images but none is predicted, F1 is
      0.
    * A macro average is ``None`` when the figure is undefined for either
      class, since the mean of the other class alone would pass for an
      average over both.
    * AUC is ``None`` when ``labels`` contains only one class, and
      ``auc_undefined_reason`` then contains the reason. Otherwise
      ``auc_undefined_reason`` is ``None``.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        True class index of each image, 0 or 1.
    scores : array-like of float, shape (N, 2)
        Class probabilities in the order of ``classes``. Each row must lie in
        [0, 1] and sum to 1 within ``ROW_SUM_TOLERANCE``.
    classes : sequence of str
        The two class names in score-column order, e.g. ``('STB', 'SM')``.
    positive_class : str or int
        Name or index of the class that counts as positive.
    threshold : float, default=0.5
        Decision threshold on the positive-class score, in [0, 1].

    Returns
    -------
    dict
        JSON-serialisable figures with these keys:

        * ``n_images``, ``classes``, ``positive_class`` (name),
          ``positive_index``, ``threshold``;
        * ``accuracy`` over all images;
        * ``precision``, ``sensitivity`` and ``f1`` of the positive class,
          ``specificity`` (recall of the negative class) and ``npv``
          (precision of the negative class);
        * ``macro_precision``, ``macro_sensitivity`` (macro recall) and
          ``macro_f1``, the unweighted means over both classes;
        * ``auc``, the ROC AUC of the positive-class score, and
          ``auc_undefined_reason``;
        * ``confusion_matrix`` as nested lists, with rows as true class and
          columns as predicted class, both in the order of ``classes``;
        * ``tp``, ``fn``, ``fp`` and ``tn`` with respect to the positive
          class;
        * ``averaging``, sentences that name the positive-class figures
          and the macro averages.

    Raises
    ------
    ValueError
        If an argument has the wrong shape or values. The message names the
        argument and the value.

    Examples
    --------
    >>> figures = compute_binary_figures(
    ...     labels=[0, 0, 1, 1],
    ...     scores=[[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]],
    ...     classes=('STB', 'SM'),
    ...     positive_class='STB')
    >>> figures['sensitivity'], figures['specificity'], figures['auc']
    (0.5, 0.5, 0.75)
    >>> figures['confusion_matrix']
    [[1, 1], [1, 1]]
    """
    classes = _check_classes(classes)
    positive_index = resolve_positive_index(positive_class, classes)
    threshold = validate_threshold(threshold)
    scores = _check_scores(scores)
    labels = _check_labels(labels, n_images=len(scores))

    negative_index = 1 - positive_index
    predictions = predict_labels(scores, positive_index, threshold)
    class_indices = [0, 1]

    precision_per_class = precision_score(
        labels, predictions, labels=class_indices, average=None,
        zero_division=np.nan)
    recall_per_class = recall_score(
        labels, predictions, labels=class_indices, average=None,
        zero_division=np.nan)
    f1_per_class = f1_score(
        labels, predictions, labels=class_indices, average=None,
        zero_division=np.nan)

    # A macro average over two classes is undefined when either class's
    # figure is: scikit-learn's NaN-skipping mean would silently report
    # one class's figure as the mean of both.
    macro = {}
    for name, score_function, per_class in (
            ('precision', precision_score, precision_per_class),
            ('recall', recall_score, recall_per_class),
            ('f1', f1_score, f1_per_class)):
        if np.isnan(per_class).any():
            macro[name] = np.nan
            continue
        macro[name] = score_function(labels, predictions,
                                     labels=class_indices, average='macro',
                                     zero_division=np.nan)

    auc, auc_undefined_reason = _compute_auc(
        labels, scores[:, positive_index], positive_index)

    matrix = confusion_matrix(labels, predictions, labels=class_indices)

    positive_name = classes[positive_index]
    negative_name = classes[negative_index]
    return {
        'n_images': int(len(labels)),
        'classes': list(classes),
        'positive_class': positive_name,
        'positive_index': positive_index,
        'threshold': threshold,
        'accuracy': float(accuracy_score(labels, predictions)),
        'precision': _none_if_nan(precision_per_class[positive_index]),
        'sensitivity': _none_if_nan(recall_per_class[positive_index]),
        'specificity': _none_if_nan(recall_per_class[negative_index]),
        'f1': _none_if_nan(f1_per_class[positive_index]),
        'npv': _none_if_nan(precision_per_class[negative_index]),
        'macro_precision': _none_if_nan(macro['precision']),
        'macro_sensitivity': _none_if_nan(macro['recall']),
        'macro_f1': _none_if_nan(macro['f1']),
        'auc': auc,
        'auc_undefined_reason': auc_undefined_reason,
        'confusion_matrix': matrix.astype(int).tolist(),
        'tp': int(matrix[positive_index, positive_index]),
        'fn': int(matrix[positive_index, negative_index]),
        'fp': int(matrix[negative_index, positive_index]),
        'tn': int(matrix[negative_index, negative_index]),
        'averaging': (
            f'precision, sensitivity and f1 belong to the positive class '
            f'{positive_name}. specificity and npv are the recall and '
            f'precision of the negative class {negative_name}. '
            f'macro_precision, macro_sensitivity and macro_f1 are unweighted '
            f'means over {positive_name} and {negative_name}.'),
    }


def write_predictions_csv(path: str | os.PathLike,
                          records: Sequence[Mapping[str, Any]]) -> Path:
    """Write one row per image to a CSV file, atomically.

    The columns are ``roi_id``, ``patient_id``, ``site``, ``label`` (class
    name), ``label_index``, one ``score_<class>`` column per class in the
    order of the first record, and ``pred_label`` (class name). ``None`` is
    written as an empty cell. The rows go to a temporary file in the same
    folder, which then replaces ``path``, so a reader never sees half a file.

    Args:
        path (str | os.PathLike): Output CSV file. Its folder must exist.
        records (Sequence[Mapping[str, Any]]): One mapping per image with
            exactly the columns above.

    Returns:
        Path: The written file.

    Raises:
        ValueError: If ``records`` is empty or a record has missing or extra
            columns.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> record = dict(roi_id='r1', patient_id='p1', site=None,
        ...               label='STB', label_index=0, score_STB=0.8,
        ...               score_SM=0.2, pred_label='STB')
        >>> path = write_predictions_csv(folder / 'predictions.csv', [record])
        >>> read_predictions_csv(path) == [record]
        True
    """
    if len(records) == 0:
        raise ValueError(
            'records is empty, but write_predictions_csv needs at least one '
            'image to know the score columns.')

    score_columns = [
        key for key in records[0] if str(key).startswith(SCORE_PREFIX)
    ]
    if not score_columns:
        raise ValueError(
            f'records[0] has no {SCORE_PREFIX}<class> column, got keys '
            f'{list(records[0])}. Add one score column per class.')
    fieldnames = [*ID_COLUMNS, *score_columns, PREDICTION_COLUMN]

    for index, record in enumerate(records):
        missing = [name for name in fieldnames if name not in record]
        extra = [name for name in record if name not in fieldnames]
        if missing or extra:
            raise ValueError(
                f'records[{index}] does not match the columns {fieldnames}: '
                f'missing {missing}, extra {extra}.')

    with open_atomic(path, newline='') as file:
        writer = csv.DictWriter(file, fieldnames=fieldnames)
        writer.writeheader()
        for record in records:
            writer.writerow({
                name: _format_cell(record[name])
                for name in fieldnames
            })
    return Path(path)


def read_predictions_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a file written by :func:`write_predictions_csv`.

    Args:
        path (str | os.PathLike): CSV file with a header row.

    Returns:
        list[dict[str, Any]]: One record per row. ``label_index`` is an int,
        the ``score_<class>`` values are floats and an empty ``roi_id``,
        ``patient_id`` or ``site`` cell is ``None``.

    Raises:
        ValueError: If a required column is missing.

    Examples:
        See :func:`write_predictions_csv`.
    """
    with open(path, newline='', encoding='utf-8') as file:
        reader = csv.DictReader(file)
        header = list(reader.fieldnames or [])

        missing = [
            name for name in (*ID_COLUMNS, PREDICTION_COLUMN)
            if name not in header
        ]
        if missing or not any(
                name.startswith(SCORE_PREFIX) for name in header):
            raise ValueError(
                f'{path} is not a predictions file: header {header} lacks '
                f'{missing or [SCORE_PREFIX + "<class>"]}. Write it with '
                f'write_predictions_csv.')

        records = []
        for row in reader:
            record: dict[str, Any] = {}
            for name in header:
                cell = row[name]
                if name.startswith(SCORE_PREFIX):
                    record[name] = float(cell)
                elif name == 'label_index':
                    record[name] = int(cell)
                elif name in ('roi_id', 'patient_id', 'site'):
                    record[name] = cell if cell != '' else None
                else:
                    record[name] = cell
            records.append(record)
    return records


def write_metrics_json(path: str | os.PathLike,
                       figures: Mapping[str, Any]) -> Path:
    """Write figures to a JSON file with indent 2, atomically.

    Args:
        path (str | os.PathLike): Output JSON file. Its folder must exist.
        figures (Mapping[str, Any]): JSON-serialisable figures, e.g. the
            output of :func:`compute_binary_figures`. NaN is rejected, so
            undefined figures must be ``None``.

    Returns:
        Path: The written file.

    Examples:
        >>> import json, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / 'metrics.json'
        >>> _ = write_metrics_json(path, {'accuracy': 0.9, 'auc': None})
        >>> json.loads(path.read_text())
        {'accuracy': 0.9, 'auc': None}
    """
    with open_atomic(path) as file:
        json.dump(dict(figures), file, indent=2, allow_nan=False)
        file.write('\n')
    return Path(path)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(
            f'classes must be a sequence of two class names, got '
            f'{classes!r}. Pass e.g. (\'STB\', \'SM\').')
    classes = tuple(classes)
    if len(classes) != 2:
        raise ValueError(
            f'classes must name exactly two classes, got {len(classes)}: '
            f'{classes}. These figures are for a two-class diagnosis only.')
    if not all(isinstance(name, str) for name in classes):
        raise ValueError(f'classes must be strings, got {classes!r}.')
    if classes[0] == classes[1]:
        raise ValueError(
            f'classes must be two different names, got {classes!r}.')
    return classes


def _check_scores(scores: Any) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != 2:
        raise ValueError(
            f'scores must have shape (N, 2), one probability per class, got '
            f'shape {scores.shape}. These figures are for a two-class '
            f'diagnosis only.')

    out_of_range = ~((scores >= 0.0) & (scores <= 1.0))
    if out_of_range.any():
        row, column = np.argwhere(out_of_range)[0]
        raise ValueError(
            f'scores must be probabilities in [0, 1], got scores[{row}, '
            f'{column}] = {scores[row, column]}. Apply softmax to logits '
            f'first.')

    row_sums = scores.sum(axis=1)
    off_rows = np.flatnonzero(np.abs(row_sums - 1.0) > ROW_SUM_TOLERANCE)
    if off_rows.size:
        row = off_rows[0]
        raise ValueError(
            f'scores rows must sum to 1, got a sum of {row_sums[row]} in row '
            f'{row}. Pass softmax probabilities over both classes.')
    return scores


def _check_labels(labels: Any, n_images: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f'labels must have shape (N,), got shape {labels.shape}.')
    if len(labels) == 0:
        raise ValueError('labels is empty, but at least one image is needed.')
    if len(labels) != n_images:
        raise ValueError(
            f'labels and scores must have one entry per image, got '
            f'{len(labels)} labels and {n_images} score rows.')
    if labels.dtype.kind not in 'iu':
        raise ValueError(
            f'labels must be integer class indices, got dtype {labels.dtype}. '
            f'Pass label_index values, not class names or floats.')

    invalid = np.flatnonzero((labels < 0) | (labels > 1))
    if invalid.size:
        index = invalid[0]
        raise ValueError(
            f'labels must be 0 or 1, got labels[{index}] = {labels[index]}. '
            f'These figures are for a two-class diagnosis only.')
    return labels.astype(np.int64)


def _compute_auc(labels: np.ndarray, positive_scores: np.ndarray,
                 positive_index: int) -> tuple[float | None, str | None]:
    present = np.unique(labels)
    if len(present) < 2:
        return None, (
            f'only class index {int(present[0])} is present in labels, and '
            f'ROC AUC needs images of both classes.')
    is_positive = (labels == positive_index).astype(int)
    return float(roc_auc_score(is_positive, positive_scores)), None


def _none_if_nan(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _format_cell(value: Any) -> Any:
    if value is None:
        return ''
    if isinstance(value, (float, np.floating)):
        # repr keeps every digit, so read_predictions_csv gets the same float.
        return repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
