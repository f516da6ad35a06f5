"""Human readers against the models on the same ROIs or patients.

A reads CSV has one row per call of a reader: the ROI (``roi_id``, image
level) or the patient (``patient_id``, patient level) read, the ``reader``,
the ``call`` (a class name) and an optional ``confidence``. The truth comes
from the models' saved test outputs (``predictions.csv``, plus
``splits/patients.csv`` for patient labels). Each reader gets accuracy,
sensitivity and specificity of the positive class with Wilson intervals
and a confusion matrix, so that a reader can be drawn as one point on a
model's ROC curve. Each model is compared with each reader by McNemar's
test on the items that the reader read.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix

from ..utils.fileio import atomic_write_json, atomic_write_text
from .binary_figures import (SCORE_PREFIX, _check_classes,
                             read_predictions_csv, resolve_positive_index)
from .patient_level import aggregate_by_patient
from .statistics import mcnemar_test, wilson_interval
from .threshold import THRESHOLD_FILE, read_threshold_json

#: Id column of a reads CSV -> the level it sets.
LEVEL_OF_ID_COLUMN = {'roi_id': 'image', 'patient_id': 'patient'}

#: Columns every reads CSV needs besides one id column.
REQUIRED_READ_COLUMNS = ('reader', 'call')

#: Proportions per reader: figure -> (numerator cells, denominator cells).
READER_FIGURES = {
    'accuracy': (('tp', 'tn'), ('tp', 'fn', 'fp', 'tn')),
    'sensitivity': (('tp', ), ('tp', 'fn')),
    'specificity': (('tn', ), ('tn', 'fp')),
}


def read_reads_csv(path: str | os.PathLike,
                   classes: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """Read and check a CSV of human reads.

    Args:
        path (str | os.PathLike): CSV file with a header row and the
            columns ``roi_id`` or ``patient_id`` (exactly one of them),
            ``reader``, ``call`` and optionally ``confidence``.
        classes (Sequence[str]): The two class names that a call may take.

    Returns:
        tuple[str, list[dict[str, Any]]]: The level (``'image'`` for
        ``roi_id``, ``'patient'`` for ``patient_id``) and one read per row:
        ``reader``, ``id``, ``call``, ``confidence`` (float or ``None``) and
        ``line`` (line number in the file).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On a missing column, an empty cell, a call that is no
            class name, a confidence that is no number, a repeated (reader,
            id) pair, or a file without reads. The message names the file,
            the line and the value.

    NOTE: ``confidence`` is checked and returned but no figure uses it yet,
    so a reader has one ROC point, not a curve.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / 'reads.csv'
        >>> _ = path.write_text('roi_id,reader,call\\nr1,A,STB\\n')
        >>> level, reads = read_reads_csv(path, ('STB', 'SM'))
        >>> level, reads[0]['reader'], reads[0]['call'], reads[0]['line']
        ('image', 'A', 'STB', 2)
    """
    classes = _check_classes(classes)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'reads file {path} not found.')

    with open(path, newline='', encoding='utf-8-sig') as file:
        reader = csv.DictReader(file)
        header = [name.strip() for name in (reader.fieldnames or [])]
        reader.fieldnames = header
        id_column = _read_id_column(path, header)

        reads = []
        first_line_of = {}
        for row in reader:
            line = reader.line_num
            read = _parse_read(path, line, row, id_column, classes)
            key = (read['reader'], read['id'])
            if key in first_line_of:
                raise ValueError(
                    f'{path}, line {line}: reader {read["reader"]!r} read '
                    f'{id_column} {read["id"]!r} already on line '
                    f'{first_line_of[key]}. Keep one call per reader and '
                    f'{id_column}.')
            first_line_of[key] = line
            reads.append(read)

    if not reads:
        raise ValueError(f'{path} contains a header but no reads.')
    return LEVEL_OF_ID_COLUMN[id_column], reads


def reader_figures(truth: Sequence[str], calls: Sequence[str],
                   classes: Sequence[str], positive_class: str | int,
                   confidence: float = 0.95) -> dict[str, Any]:
    """Compute a reader's accuracy, sensitivity and specificity.

    Sensitivity and specificity are those of the positive class, so the
    reader is the point (1 - specificity, sensitivity) in ROC space. Each
    figure has a Wilson score interval
    (:func:`~stbsm_mm.evaluation.wilson_interval`).

    Args:
        truth (Sequence[str]): True class name of each item.
        calls (Sequence[str]): The reader's class name for the same items.
        classes (Sequence[str]): The two class names in class order.
        positive_class (str | int): Name or index of the positive class.
        confidence (float): Confidence level of the intervals. Defaults to
            0.95.

    Returns:
        dict[str, Any]: ``n``, ``accuracy``, ``sensitivity`` and
        ``specificity`` (each ``{'value', 'low', 'high'}``, all ``None``
        when the denominator is 0), ``confusion_matrix`` (rows true class,
        columns called class, in class order) and ``tp``, ``fn``, ``fp``,
        ``tn``.

    Raises:
        ValueError: If the lengths differ, there are no items, or a name is
            not one of ``classes``.

    Examples:
        >>> result = reader_figures(['STB', 'STB', 'SM', 'SM'],
        ...                         ['STB', 'SM', 'SM', 'SM'],
        ...                         ('STB', 'SM'), 'STB')
        >>> result['sensitivity']['value'], result['specificity']['value']
        (0.5, 1.0)
        >>> result['confusion_matrix']
        [[1, 1], [0, 2]]
    """
    classes = _check_classes(classes)
    positive_index = resolve_positive_index(positive_class, classes)
    if len(truth) != len(calls):
        raise ValueError(
            f'truth and calls must have one entry per item, got {len(truth)} '
            f'and {len(calls)}.')
    if len(truth) == 0:
        raise ValueError('truth is empty, but at least one read is needed.')
    for name, values in (('truth', truth), ('calls', calls)):
        unknown = sorted({str(value) for value in values} - set(classes))
        if unknown:
            raise ValueError(
                f'{name} contains {unknown}, which are not class names. Use '
                f'the classes {list(classes)}.')

    matrix = confusion_matrix(truth, calls, labels=list(classes))
    negative_index = 1 - positive_index
    cells = {
        'tp': int(matrix[positive_index, positive_index]),
        'fn': int(matrix[positive_index, negative_index]),
        'fp': int(matrix[negative_index, positive_index]),
        'tn': int(matrix[negative_index, negative_index]),
    }

    result: dict[str, Any] = {'n': len(truth)}
    for name, (numerator, denominator) in READER_FIGURES.items():
        successes = sum(cells[cell] for cell in numerator)
        total = sum(cells[cell] for cell in denominator)
        low, high = wilson_interval(successes, total, confidence)
        result[name] = {
            'value': successes / total if total else None,
            'low': low,
            'high': high,
        }
    result['confusion_matrix'] = matrix.astype(int).tolist()
    result.update(cells)
    return result


def load_test_outputs(pred_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the outputs of ``tools/test.py`` that a comparison needs.

    Args:
        pred_dir (str | os.PathLike): A test output folder with
            ``predictions.csv``, ``metrics.json`` and optionally
            ``threshold.json``.

    Returns:
        dict[str, Any]: ``pred_dir``, ``records`` (rows of
        ``predictions.csv``), ``classes``, ``positive_class`` (name) and
        ``threshold`` (the one of ``metrics.json``).

    Raises:
        FileNotFoundError: If a required file is missing.
        ValueError: If ``metrics.json`` lacks a key, or ``threshold.json``
            gives another threshold than ``metrics.json``.
    """
    pred_dir = Path(pred_dir)
    for name in ('predictions.csv', 'metrics.json'):
        if not (pred_dir / name).is_file():
            raise FileNotFoundError(
                f'{pred_dir / name} not found. Pass a folder written by '
                f'tools/test.py.')

    metrics = json.loads((pred_dir / 'metrics.json').read_text('utf-8'))
    missing = [key for key in ('classes', 'positive_class', 'threshold')
               if key not in metrics]
    if missing:
        raise ValueError(
            f'{pred_dir / "metrics.json"} lacks the keys {missing}. Test the '
            f'checkpoint again with tools/test.py.')
    classes = _check_classes(metrics['classes'])
    positive_class = classes[resolve_positive_index(metrics['positive_class'],
                                                    classes)]
    threshold = float(metrics['threshold'])

    threshold_path = pred_dir / THRESHOLD_FILE
    if threshold_path.is_file():
        chosen = read_threshold_json(threshold_path)['threshold']
        if not math.isclose(chosen, threshold, rel_tol=0.0, abs_tol=1e-12):
            raise ValueError(
                f'{threshold_path} gives the threshold {chosen}, but '
                f'{pred_dir / "metrics.json"} was computed at {threshold}. '
                f'Test the checkpoint again with tools/test.py so that both '
                f'files agree.')

    return {
        'pred_dir': str(pred_dir),
        'records': read_predictions_csv(pred_dir / 'predictions.csv'),
        'classes': list(classes),
        'positive_class': positive_class,
        'threshold': threshold,
    }


def model_calls(outputs: Mapping[str, Any], level: str,
                patient_labels: Mapping[str, str] | None = None
                ) -> dict[str, tuple[str, str]]:
    """Return the truth and the model's call of each ROI or patient.

    At image level the call is the ROI's positive-class score against the
    model's threshold. At patient level the ROI scores of each patient are
    averaged with :func:`~stbsm_mm.evaluation.aggregate_by_patient`
    (``method='mean'``) and the mean is held against the same threshold.

    Args:
        outputs (Mapping[str, Any]): The output of
            :func:`load_test_outputs`.
        level (str): ``'image'`` or ``'patient'``.
        patient_labels (Mapping[str, str], optional): Patient id -> class
            name, needed at patient level when one patient's ROIs carry
            different labels.

    Returns:
        dict[str, tuple[str, str]]: ROI id or patient id -> (true class
        name, called class name).
    """
    classes = tuple(outputs['classes'])
    positive_index = classes.index(outputs['positive_class'])
    if level == 'image':
        rows, id_column = outputs['records'], 'roi_id'
    else:
        id_column = 'patient_id'
        try:
            rows = aggregate_by_patient(outputs['records'], classes,
                                        method='mean',
                                        positive_index=positive_index,
                                        patient_labels=patient_labels)
        except ValueError as error:
            raise ValueError(
                f'{outputs["pred_dir"]}: {error} With tools/compare_readers.py'
                f', pass --data-root to read the labels from '
                f'splits/patients.csv.') from error

    column = SCORE_PREFIX + classes[positive_index]
    calls = {}
    for row in rows:
        is_positive = float(row[column]) >= outputs['threshold']
        called = classes[positive_index if is_positive else 1 - positive_index]
        calls[str(row[id_column])] = (classes[int(row['label_index'])], called)
    return calls


def compare_readers(reads_path: str | os.PathLike,
                    pred_dirs: Sequence[str | os.PathLike],
                    names: Sequence[str] | None = None,
                    patient_labels: Mapping[str, str] | None = None
                    ) -> dict[str, Any]:
    """Compute each reader's figures and test each model against each reader.

    Args:
        reads_path (str | os.PathLike): A reads CSV, see
            :func:`read_reads_csv`.
        pred_dirs (Sequence[str | os.PathLike]): Test output folders of the
            models, see :func:`load_test_outputs`. They must share the
            classes and the positive class.
        names (Sequence[str], optional): One name per model. Defaults to
            ``<parent folder>/<folder>`` of each ``pred_dir``.
        patient_labels (Mapping[str, str], optional): Patient id -> class
            name, e.g. from ``splits/patients.csv``. It sets the patient
            truth at patient level.

    Returns:
        dict[str, Any]: ``level``, ``classes``, ``positive_class``,
        ``readers`` (one entry of :func:`reader_figures` per reader, plus
        ``reader``), ``models`` (``name``, ``pred_dir``, ``threshold``) and
        ``mcnemar`` (per model and reader: ``model``, ``reader``, ``n``,
        ``model_correct_reader_wrong``, ``model_wrong_reader_correct``,
        ``statistic``, ``p_value``, ``method``).

    Raises:
        ValueError: If the models disagree on the classes, the positive
            class or a true label, or a read names an id that is not in
            every model's predictions, or as :func:`read_reads_csv`.

    NOTE: at image level McNemar's test treats the ROIs as independent.
    ROIs of one patient are correlated, so with several ROIs per patient
    the p-values are too small. Reads of patients avoid this.
    """
    if not pred_dirs:
        raise ValueError('pred_dirs is empty. Pass at least one test output '
                         'folder.')
    names = _model_names(pred_dirs, names)
    models = [load_test_outputs(pred_dir) for pred_dir in pred_dirs]
    classes, positive_class = _shared_classes(models)
    level, reads = read_reads_csv(reads_path, classes)

    calls_of_model = [model_calls(model, level, patient_labels)
                      for model in models]
    truth = _check_read_ids(reads_path, level, reads, names, calls_of_model)

    readers = []
    mcnemar = []
    for reader in _reader_names(reads):
        own_reads = [read for read in reads if read['reader'] == reader]
        item_ids = [read['id'] for read in own_reads]
        reader_calls = [read['call'] for read in own_reads]
        true_labels = [truth[item_id] for item_id in item_ids]

        figures = reader_figures(true_labels, reader_calls, classes,
                                 positive_class)
        readers.append({'reader': reader, **figures})

        reader_correct = np.array(
            [call == label for call, label in zip(reader_calls, true_labels)])
        for name, calls in zip(names, calls_of_model):
            model_correct = np.array(
                [calls[item_id][1] == calls[item_id][0]
                 for item_id in item_ids])
            test = mcnemar_test(model_correct, reader_correct)
            mcnemar.append({
                'model': name,
                'reader': reader,
                'n': len(item_ids),
                'model_correct_reader_wrong': test['b'],
                'model_wrong_reader_correct': test['c'],
                'statistic': test['statistic'],
                'p_value': test['p_value'],
                'method': test['method'],
            })

    return {
        'level': level,
        'classes': list(classes),
        'positive_class': positive_class,
        'readers': readers,
        'models': [{
            'name': name,
            'pred_dir': model['pred_dir'],
            'threshold': model['threshold'],
        } for name, model in zip(names, models)],
        'mcnemar': mcnemar,
    }


def readers_markdown(comparison: Mapping[str, Any]) -> str:
    """Return Markdown tables of the readers' figures and McNemar's tests.

    Args:
        comparison (Mapping[str, Any]): The output of
            :func:`compare_readers`.

    Returns:
        str: Two tables and a note on the positive class and thresholds.
    """
    def cell(entry: Mapping[str, Any]) -> str:
        if entry['value'] is None:
            return 'undefined'
        return (f'{100 * entry["value"]:.1f} ({100 * entry["low"]:.1f}-'
                f'{100 * entry["high"]:.1f})')

    lines = [
        f'| reader | n | accuracy | sensitivity | specificity | '
        f'TP / FN / FP / TN |',
        '|---|---|---|---|---|---|',
    ]
    for reader in comparison['readers']:
        lines.append(
            f'| {reader["reader"]} | {reader["n"]} | '
            f'{cell(reader["accuracy"])} | {cell(reader["sensitivity"])} | '
            f'{cell(reader["specificity"])} | {reader["tp"]} / '
            f'{reader["fn"]} / {reader["fp"]} / {reader["tn"]} |')

    lines += [
        '',
        '| model | reader | n | model right, reader wrong | model wrong, '
        'reader right | p | test |',
        '|---|---|---|---|---|---|---|',
    ]
    for test in comparison['mcnemar']:
        lines.append(
            f'| {test["model"]} | {test["reader"]} | {test["n"]} | '
            f'{test["model_correct_reader_wrong"]} | '
            f'{test["model_wrong_reader_correct"]} | '
            f'{test["p_value"]:.4f} | {test["method"]} |')

    thresholds = ', '.join(f'{model["name"]} {model["threshold"]:.4g}'
                           for model in comparison['models'])
    lines += [
        '',
        f'Level: {comparison["level"]}. Percent with 95% Wilson intervals; '
        f'sensitivity and specificity of the positive class '
        f'{comparison["positive_class"]}. McNemar\'s test pairs each model '
        f'with each reader on the items that the reader read. Model '
        f'thresholds: {thresholds}.',
    ]
    return '\n'.join(lines) + '\n'


def write_reader_comparison(out_dir: str | os.PathLike,
                            comparison: Mapping[str, Any]
                            ) -> tuple[Path, Path]:
    """Write ``readers.json`` and ``readers.md`` to ``out_dir``, atomically.

    Args:
        out_dir (str | os.PathLike): Output folder. It is created if
            missing.
        comparison (Mapping[str, Any]): The output of
            :func:`compare_readers`.

    Returns:
        tuple[Path, Path]: The JSON and the Markdown file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / 'readers.json'
    markdown_path = out_dir / 'readers.md'
    atomic_write_json(json_path, dict(comparison))
    atomic_write_text(markdown_path, readers_markdown(comparison))
    return json_path, markdown_path


def _read_id_column(path: Path, header: list[str]) -> str:
    id_columns = [name for name in LEVEL_OF_ID_COLUMN if name in header]
    if len(id_columns) != 1:
        found = 'both' if id_columns else 'neither'
        raise ValueError(
            f'{path}, line 1: the header {header} contains {found} of '
            f'roi_id and patient_id. Give exactly one: roi_id for reads of '
            f'ROIs, patient_id for reads of patients.')
    missing = [name for name in REQUIRED_READ_COLUMNS if name not in header]
    if missing:
        raise ValueError(
            f'{path}, line 1: the header {header} lacks the columns '
            f'{missing}. A reads CSV needs {id_columns[0]}, reader, call and '
            f'optionally confidence.')
    return id_columns[0]


def _parse_read(path: Path, line: int, row: Mapping[str, Any],
                id_column: str, classes: tuple[str, ...]) -> dict[str, Any]:
    values = {}
    for column in (id_column, *REQUIRED_READ_COLUMNS):
        value = (row.get(column) or '').strip()
        if not value:
            raise ValueError(
                f'{path}, line {line}: the {column} cell is empty. Fill it '
                f'in or delete the row.')
        values[column] = value

    if values['call'] not in classes:
        raise ValueError(
            f'{path}, line {line}: call {values["call"]!r} is not a class '
            f'name. Use one of {list(classes)} (case-sensitive).')

    confidence = None
    text = (row.get('confidence') or '').strip()
    if text:
        try:
            confidence = float(text)
        except ValueError:
            confidence = math.nan
        if not math.isfinite(confidence):
            raise ValueError(
                f'{path}, line {line}: confidence {text!r} is not a finite '
                f'number. Write a number, e.g. 4 or 0.8, or leave the cell '
                f'empty.')
    return {
        'reader': values['reader'],
        'id': values[id_column],
        'call': values['call'],
        'confidence': confidence,
        'line': line,
    }


def _model_names(pred_dirs: Sequence[str | os.PathLike],
                 names: Sequence[str] | None) -> list[str]:
    if names is None:
        names = [f'{Path(pred_dir).resolve().parent.name}/'
                 f'{Path(pred_dir).resolve().name}' for pred_dir in pred_dirs]
    names = [str(name) for name in names]
    if len(names) != len(pred_dirs):
        raise ValueError(
            f'names must give one name per prediction folder, got '
            f'{len(names)} names for {len(pred_dirs)} folders.')
    if len(set(names)) != len(names):
        raise ValueError(
            f'names must be distinct, got {names}. Pass distinct names, '
            f'e.g. --names resnet34 mvitv2.')
    return names


def _shared_classes(models: Sequence[Mapping[str, Any]]
                    ) -> tuple[tuple[str, ...], str]:
    first = models[0]
    for model in models[1:]:
        for key in ('classes', 'positive_class'):
            if model[key] != first[key]:
                raise ValueError(
                    f'{model["pred_dir"]} has {key} {model[key]!r}, but '
                    f'{first["pred_dir"]} has {first[key]!r}. Compare '
                    f'models tested with the same classes and positive '
                    f'class.')
    return tuple(first['classes']), first['positive_class']


def _check_read_ids(reads_path: str | os.PathLike, level: str,
                    reads: Sequence[Mapping[str, Any]], names: Sequence[str],
                    calls_of_model: Sequence[Mapping[str, tuple[str, str]]]
                    ) -> dict[str, str]:
    """Check that every read id is in every model's predictions.

    Returns:
        dict[str, str]: Read id -> true class name.
    """
    id_column = 'roi_id' if level == 'image' else 'patient_id'
    truth: dict[str, str] = {}
    for read in reads:
        for name, calls in zip(names, calls_of_model):
            if read['id'] not in calls:
                raise ValueError(
                    f'{reads_path}, line {read["line"]}: {id_column} '
                    f'{read["id"]!r} is not in the predictions of model '
                    f'{name}. Read only the {id_column}s of the tested '
                    f'split, or test the model on the split that contains '
                    f'it.')
            label = calls[read['id']][0]
            if truth.setdefault(read['id'], label) != label:
                raise ValueError(
                    f'{id_column} {read["id"]!r} is {truth[read["id"]]} in '
                    f'the predictions of model {names[0]} but {label} in '
                    f'those of model {name}. Test all models on the same '
                    f'prepared data.')
    return truth


def _reader_names(reads: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the readers in order of first appearance."""
    return list(dict.fromkeys(read['reader'] for read in reads))
