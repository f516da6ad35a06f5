"""Matplotlib figures of test results: ROC, confusion matrix, calibration, CV.

Every function takes plain arrays and dicts (as stored in ``predictions.csv``,
``metrics.json``, ``summary.json`` and ``cv_summary.json``), draws one figure
with matplotlib's Agg canvas, writes it as PNG and SVG next to a path stem
and returns the two paths. The functions never touch pyplot's global state,
so they are safe in scripts, tests and servers without a display.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

PathLike = Union[str, Path]

#: File formats written for every figure, in this order.
FIGURE_FORMATS = ('png', 'svg')

#: Resolution of the PNG files, in dots per inch.
PNG_DPI = 120

#: Figures of ``cv_summary.json`` drawn by :func:`plot_cv_folds`.
CV_FIGURES = ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1',
              'auc')


def plot_roc_curves(curves: Sequence[Mapping[str, Any]],
                    stem: PathLike,
                    readers: Optional[Sequence[Mapping[str, Any]]] = None,
                    title: str = 'ROC curves') -> List[Path]:
    """Draw the ROC curves of several models on one axes.

    Args:
        curves: One dict per model with ``name`` (str), ``labels`` (1 or
            True for the positive class, one per image) and ``scores`` (the
            positive-class score of each image). An optional ``auc_ci``,
            the ``(low, high)`` 95% confidence interval of the AUC, is shown
            in the legend.
        stem: Output path without suffix; ``.png`` and ``.svg`` are added.
        readers: Optional reader operating points, each a dict with
            ``name``, ``sensitivity`` and ``specificity`` (fractions in
            [0, 1]); drawn at (1 - specificity, sensitivity).
        title: Axes title.

    Returns:
        list[Path]: The PNG and SVG files written.

    Raises:
        ValueError: If ``curves`` is empty, labels and scores differ in
            length, a score is not finite, a model has only one class, or
            a reader's figure lies outside [0, 1].

    Examples:
        >>> paths = plot_roc_curves(
        ...     [{'name': 'ResNet34', 'labels': [1, 1, 0, 0],
        ...       'scores': [0.9, 0.4, 0.6, 0.1]}], '/tmp/roc')
        >>> [path.suffix for path in paths]
        ['.png', '.svg']
    """
    if not curves:
        raise ValueError('curves is empty; give at least one model as '
                         '{"name", "labels", "scores"}.')
    checked = [_check_curve(curve, index) for index, curve in enumerate(curves)]
    points = [_check_reader(reader, index)
              for index, reader in enumerate(readers or [])]

    figure = _new_figure((6.0, 6.6 + 0.2 * len(checked)))
    axes = figure.add_subplot()
    for name, labels, scores, auc_ci in checked:
        false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
        label = f'{name}: AUC {roc_auc_score(labels, scores):.3f}'
        if auc_ci is not None:
            label += f' (95% CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f})'
        axes.plot(false_positive_rate, true_positive_rate, linewidth=1.8,
                  label=label)

    for name, sensitivity, specificity in points:
        axes.plot(1.0 - specificity, sensitivity, marker='o', markersize=7,
                  linestyle='none', color='black')
        axes.annotate(name, (1.0 - specificity, sensitivity),
                      xytext=(6, -12), textcoords='offset points', fontsize=9)

    axes.plot([0, 1], [0, 1], linestyle='--', color='grey', linewidth=1,
              label='chance')
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect('equal')
    axes.set_xlabel('1 - specificity (false-positive rate)')
    axes.set_ylabel('sensitivity (true-positive rate)')
    axes.set_title(title)
    axes.grid(alpha=0.3)
    # Below the axes, the legend never hides a curve, however many models.
    axes.legend(loc='upper center', bbox_to_anchor=(0.5, -0.12),
                fontsize=8, frameon=False)
    return _save(figure, stem)


def plot_confusion_matrix(matrix: Any,
                          class_names: Sequence[str],
                          stem: PathLike,
                          title: str = 'Confusion matrix') -> List[Path]:
    """Draw a confusion matrix as counts and as row-normalised fractions.

    Args:
        matrix: Square array of counts, true classes as rows and predicted
            classes as columns, in the order of ``class_names``.
        class_names: Class name of each row and column.
        stem: Output path without suffix; ``.png`` and ``.svg`` are added.
        title: Title above both panels.

    Returns:
        list[Path]: The PNG and SVG files written.

    Raises:
        ValueError: If ``matrix`` is not square, does not match
            ``class_names`` or contains negative or non-integer counts.

    Examples:
        >>> paths = plot_confusion_matrix([[7, 3], [2, 8]], ['STB', 'SM'],
        ...                               '/tmp/confusion')
    """
    counts = np.asarray(matrix, dtype=float)
    names = [str(name) for name in class_names]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f'matrix must be square, got shape {counts.shape}. '
                         'Pass true classes as rows, predictions as columns.')
    if counts.shape[0] != len(names):
        raise ValueError(
            f'matrix has {counts.shape[0]} classes but class_names has '
            f'{len(names)} ({names}); give one name per row.')
    if (not np.all(np.isfinite(counts)) or np.any(counts < 0)
            or np.any(counts != np.round(counts))):
        raise ValueError(f'matrix must contain non-negative integer counts, got '
                         f'{counts.tolist()}.')

    # A row without images stays 0 instead of dividing by zero.
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros_like(counts),
                          where=row_totals > 0)

    figure = _new_figure((10.0, 4.6))
    panels = (('counts', counts, lambda v: f'{int(v)}', None),
              ('fraction of each true class', fractions,
               lambda v: f'{v:.2f}', (0.0, 1.0)))
    for index, (name, values, text, limits) in enumerate(panels):
        axes = figure.add_subplot(1, 2, index + 1)
        vmin, vmax = limits or (0.0, max(float(values.max()), 1.0))
        image = axes.imshow(values, cmap='Blues', vmin=vmin, vmax=vmax)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
        for row in range(values.shape[0]):
            for column in range(values.shape[1]):
                dark = values[row, column] > vmin + 0.6 * (vmax - vmin)
                axes.text(column, row, text(values[row, column]),
                          ha='center', va='center', fontsize=12,
                          color='white' if dark else 'black')
        axes.set_xticks(range(len(names)), names)
        axes.set_yticks(range(len(names)), names)
        axes.set_xlabel('predicted class')
        axes.set_ylabel('true class')
        axes.set_title(name)
    figure.suptitle(title)
    return _save(figure, stem)


def plot_reliability_diagram(
        stem: PathLike,
        reliability: Optional[Mapping[str, Any]] = None,
        labels: Any = None,
        scores: Any = None,
        n_bins: int = 10,
        strategy: str = 'uniform',
        title: str = 'Reliability diagram') -> List[Path]:
    """Draw observed against predicted probability of the positive class.

    Uses the bins of ``reliability`` when given (the ``reliability`` entry
    of ``summary.json``'s calibration), otherwise computes them from
    ``labels`` and ``scores`` with
    :func:`sklearn.calibration.calibration_curve`.

    Args:
        stem: Output path without suffix; ``.png`` and ``.svg`` are added.
        reliability: Dict with ``mean_predicted``, ``observed_fraction``,
            ``counts`` (images per non-empty bin) and ``brier``.
        labels: 1 or True for the positive class, one per image; used when
            ``reliability`` is None.
        scores: Positive-class score of each image, in [0, 1].
        n_bins: Number of bins when computing.
        strategy: ``'uniform'`` (equal-width bins) or ``'quantile'``
            (equal-count bins) when computing.
        title: Axes title.

    Returns:
        list[Path]: The PNG and SVG files written.

    Raises:
        ValueError: If neither ``reliability`` nor both ``labels`` and
            ``scores`` are given, their lengths differ, a score lies
            outside [0, 1], or ``n_bins`` or ``strategy`` is invalid.

    Examples:
        >>> paths = plot_reliability_diagram(
        ...     '/tmp/reliability', labels=[1, 0, 1, 0],
        ...     scores=[0.8, 0.3, 0.6, 0.4], n_bins=2)
    """
    if reliability is not None:
        predicted, observed, counts, brier = _read_reliability(reliability)
        bin_note = (f'{reliability.get("n_bins", len(predicted))} '
                    f'{reliability.get("strategy", "")} bins').replace(
                        '  ', ' ')
    else:
        predicted, observed, counts, brier = _compute_reliability(
            labels, scores, n_bins, strategy)
        bin_note = f'{n_bins} {strategy} bins'

    figure = _new_figure((6.0, 6.0))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle='--', color='grey', linewidth=1,
              label='perfect calibration')
    axes.plot(predicted, observed, marker='o', linewidth=1.8,
              label=f'model ({bin_note})')
    for x, y, count in zip(predicted, observed, counts):
        if math.isnan(count):
            continue
        axes.annotate(f'n={int(count)}', (x, y), xytext=(4, 4),
                      textcoords='offset points', fontsize=8)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect('equal')
    axes.set_xlabel('mean predicted probability of the positive class')
    axes.set_ylabel('observed fraction of positives')
    brier_text = 'undefined' if brier is None else f'{brier:.3f}'
    axes.set_title(f'{title}\nBrier score {brier_text}')
    axes.grid(alpha=0.3)
    axes.legend(loc='upper left', fontsize=8)
    return _save(figure, stem)


def plot_cv_folds(cv_summary: Mapping[str, Any],
                  stem: PathLike,
                  figures: Sequence[str] = CV_FIGURES,
                  title: str = 'Cross-validation') -> List[Path]:
    """Draw each figure of every fold as points, with mean and SD.

    Args:
        cv_summary: The content of ``cv_summary.json``; its ``summary``
            maps each figure to ``per_fold`` values (None where undefined),
            ``mean`` and ``std``. A bare ``summary`` dict is accepted too.
        stem: Output path without suffix; ``.png`` and ``.svg`` are added.
        figures: Names of the figures to draw, left to right. Names that
            the summary lacks are left out.
        title: Axes title.

    Returns:
        list[Path]: The PNG and SVG files written.

    Raises:
        ValueError: If the summary contains none of ``figures`` or a figure's
            entry has no ``per_fold`` list.

    Examples:
        >>> summary = {'auc': {'per_fold': [0.7, 0.9], 'mean': 0.8,
        ...                    'std': 0.14}}
        >>> paths = plot_cv_folds({'summary': summary}, '/tmp/cv',
        ...                       figures=['auc'])
    """
    summary = cv_summary.get('summary', cv_summary)
    names = [name for name in figures if name in summary]
    if not names:
        raise ValueError(
            f'cv_summary contains none of the figures {list(figures)}; pass '
            'the content of cv_summary.json.')
    fold_ids = list(cv_summary.get('folds') or [])

    figure = _new_figure((max(6.0, 1.2 * len(names) + 2.0), 4.8))
    axes = figure.add_subplot()
    for position, name in enumerate(names):
        entry = summary[name]
        if not isinstance(entry.get('per_fold'), (list, tuple)):
            raise ValueError(f'cv_summary figure {name!r} has no per_fold '
                             f'list: {entry!r}.')
        values = [value for value in entry['per_fold'] if value is not None]
        # A small fixed spread keeps equal fold values visible side by side.
        offsets = np.linspace(-0.15, 0.15, len(values)) if values else []
        axes.scatter(position + np.asarray(offsets), values, s=28,
                     color='tab:blue', alpha=0.8,
                     label='fold' if position == 0 else None)
        if entry.get('mean') is not None:
            std = entry.get('std') or 0.0
            axes.errorbar(position + 0.3, entry['mean'], yerr=std, fmt='D',
                          color='black', capsize=5, markersize=6,
                          label='mean ± SD' if position == 0 else None)

    axes.set_xticks(range(len(names)), names)
    axes.set_xlim(-0.6, len(names) - 0.4)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel('value')
    folds_text = (f'folds {", ".join(str(f) for f in fold_ids)}'
                  if fold_ids else 'folds')
    axes.set_title(f'{title} ({folds_text})')
    axes.grid(axis='y', alpha=0.3)
    axes.legend(loc='lower left', fontsize=8)
    return _save(figure, stem)


def _new_figure(size: tuple) -> Figure:
    figure = Figure(figsize=size, layout='constrained')
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, stem: PathLike) -> List[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    # SVG text stays text (not glyph outlines), so it can be searched and
    # edited for a manuscript.
    with matplotlib.rc_context({'svg.fonttype': 'none'}):
        for extension in FIGURE_FORMATS:
            path = stem.with_name(f'{stem.name}.{extension}')
            figure.savefig(path, format=extension, dpi=PNG_DPI)
            paths.append(path)
    return paths


def _check_curve(curve: Mapping[str, Any], index: int) -> tuple:
    for key in ('name', 'labels', 'scores'):
        if key not in curve:
            raise ValueError(f'curves[{index}] lacks {key!r}; give '
                             '{"name", "labels", "scores"}.')
    name = str(curve['name'])
    labels = np.asarray(curve['labels']).astype(bool)
    scores = np.asarray(curve['scores'], dtype=float)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f'curves[{index}] ({name}): labels has shape {labels.shape} but '
            f'scores has shape {scores.shape}; give one label and one score '
            'per image.')
    if not np.all(np.isfinite(scores)):
        raise ValueError(f'curves[{index}] ({name}): scores must be finite.')
    if labels.all() or not labels.any():
        raise ValueError(
            f'curves[{index}] ({name}): labels contain one class only, so the '
            'ROC curve is undefined.')
    auc_ci = curve.get('auc_ci')
    if auc_ci is not None and (len(auc_ci) != 2 or None in auc_ci):
        auc_ci = None
    return name, labels, scores, auc_ci


def _check_reader(reader: Mapping[str, Any], index: int) -> tuple:
    values = []
    for key in ('sensitivity', 'specificity'):
        value = reader.get(key)
        if isinstance(value, Mapping):
            value = value.get('value')
        if value is None or not 0.0 <= float(value) <= 1.0:
            raise ValueError(
                f'readers[{index}] {key} must be a fraction in [0, 1], got '
                f'{value!r}.')
        values.append(float(value))
    return str(reader.get('name', reader.get('reader', index))), *values


def _read_reliability(reliability: Mapping[str, Any]) -> tuple:
    predicted = list(reliability.get('mean_predicted') or [])
    observed = list(reliability.get('observed_fraction') or [])
    if len(predicted) != len(observed):
        raise ValueError(
            f'reliability has {len(predicted)} mean_predicted values but '
            f'{len(observed)} observed_fraction values; they must pair up.')
    counts = list(reliability.get('counts') or [])
    if len(counts) != len(predicted):
        # Counts of every bin, empty ones included, against the
        # non-empty bins' points: keep the non-empty counts.
        counts = [count for count in counts if count]
    if len(counts) != len(predicted):
        counts = [math.nan] * len(predicted)

    # An empty bin may be stored as None; it has no point to draw.
    points = [(float(x), float(y), c if c is not None else math.nan)
              for x, y, c in zip(predicted, observed, counts)
              if x is not None and y is not None]
    brier = reliability.get('brier')
    return ([p[0] for p in points], [p[1] for p in points],
            [p[2] for p in points], None if brier is None else float(brier))


def _compute_reliability(labels: Any, scores: Any, n_bins: int,
                         strategy: str) -> tuple:
    if labels is None or scores is None:
        raise ValueError('give reliability, or both labels and scores.')
    truth = np.asarray(labels).astype(int)
    probability = np.asarray(scores, dtype=float)
    if truth.ndim != 1 or truth.shape != probability.shape:
        raise ValueError(
            f'labels has shape {truth.shape} but scores has shape '
            f'{probability.shape}; give one label and one score per image.')
    if not np.all((probability >= 0.0) & (probability <= 1.0)):
        raise ValueError('scores must be probabilities in [0, 1].')
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f'n_bins must be a positive int, got {n_bins!r}.')
    if strategy not in ('uniform', 'quantile'):
        raise ValueError(f'strategy must be "uniform" or "quantile", got '
                         f'{strategy!r}.')

    observed, predicted = calibration_curve(truth, probability,
                                            n_bins=n_bins, strategy=strategy)
    # calibration_curve drops empty bins; count images in the kept ones.
    if strategy == 'quantile':
        edges = np.quantile(probability, np.linspace(0, 1, n_bins + 1))
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.searchsorted(edges[1:-1], probability, side='right')
    counts = np.bincount(bin_index, minlength=len(edges) - 1)
    counts = [int(count) for count in counts if count > 0]
    if len(counts) != len(predicted):
        counts = [math.nan] * len(predicted)
    brier = float(brier_score_loss(truth, probability))
    return predicted.tolist(), observed.tolist(), counts, brier
