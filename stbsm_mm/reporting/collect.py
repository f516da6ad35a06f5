"""Gather the results of trained and tested models from their work dirs.

A work dir contains one test output folder per split (``<work_dir>/<split>/``
with ``summary.json``, ``metrics.json``, ``predictions.csv``,
``test_run.json`` and optionally ``threshold.json``), ``train_run.json``
from training, and ``cv_summary.json`` from cross-validation. Missing files
are recorded as notes so that a report can list what it left out.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..evaluation.binary_figures import read_predictions_csv

PathLike = Union[str, Path]

#: Test output folders read by default: internal validation and external.
DEFAULT_SPLITS = ('val', 'external')

#: Splits of a prepared data folder described in the data summary.
DATA_SPLITS = ('train', 'val', 'external')


class ReportInputError(ValueError):
    """An input of the report is missing or invalid."""


def collect_run(work_dir: PathLike,
                name: Optional[str] = None,
                splits: Sequence[str] = DEFAULT_SPLITS) -> Dict[str, Any]:
    """Read the test outputs, training record and CV summary of a work dir.

    Args:
        work_dir: Folder given to ``tools/train.py`` / ``tools/test.py``
            (``--work-dir``) or to ``tools/cross_validate.py``.
        name: Model name shown in the report (default: the folder name).
        splits: Names of the test output sub-folders to read.

    Returns:
        dict: ``name``, ``work_dir``, ``splits`` (split -> dict with
        ``summary``, ``metrics``, ``predictions`` (records of
        ``predictions.csv``), ``test_run``, ``threshold`` (None when absent)
        and ``dir``), ``train_run`` and ``cv_summary`` (None when absent),
        and ``notes`` (what was missing).

    Raises:
        ReportInputError: If ``work_dir`` is not a folder, or it contains
            neither a test output of ``splits`` nor ``cv_summary.json``.

    Examples:
        >>> run = collect_run('work_dirs/resnet34_stbsm')  # doctest: +SKIP
        >>> run['splits']['external']['summary']['image']['auc']['value']
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise ReportInputError(f'work dir {work_dir} not found; give the '
                               'folder that tools/train.py wrote.')
    run: Dict[str, Any] = {
        'name': name or work_dir.resolve().name,
        'work_dir': str(work_dir),
        'splits': {},
        'notes': [],
    }

    # Test outputs, one folder per split.
    for split in splits:
        split_dir = work_dir / split
        if not (split_dir / 'summary.json').is_file():
            run['notes'].append(
                f'{run["name"]}: no {split} results ({split_dir / "summary.json"}'
                ' is missing).')
            continue
        run['splits'][split] = _read_split(split_dir, run)

    # Training record and cross-validation summary.
    run['train_run'] = _read_json(work_dir / 'train_run.json')
    run['cv_summary'] = _read_json(work_dir / 'cv_summary.json')

    if not run['splits'] and run['cv_summary'] is None:
        raise ReportInputError(
            f'work dir {work_dir} has no test outputs: none of '
            f'{[str(work_dir / s / "summary.json") for s in splits]} exists. '
            'Make them with `python tools/test.py CONFIG CHECKPOINT '
            '--cfg-options data_root=DATA_ROOT` (the *_external.py config '
            'for the external split), or cross-validate with '
            'tools/cross_validate.py.')
    return run


def read_data_summary(data_root: PathLike) -> Dict[str, Any]:
    """Count patients, ROIs, classes and sites per split of prepared data.

    Args:
        data_root: Folder written by ``tools/prepare_data.py``; its
            ``annotations/<split>.json`` and ``splits/patients.csv`` are
            read.

    Returns:
        dict: ``classes`` and ``splits``, where each split present maps to
        ``n_patients``, ``n_rois``, ``rois_per_class``,
        ``patients_per_class`` and ``sites`` (site -> number of patients).
        Patients are counted, never named.

    Raises:
        ReportInputError: If ``data_root`` has no ``annotations`` folder.

    Examples:
        >>> read_data_summary('data/my_prepared')['splits']['external'][
        ...     'n_patients']  # doctest: +SKIP
        4
    """
    data_root = Path(data_root)
    if not (data_root / 'annotations').is_dir():
        raise ReportInputError(
            f'{data_root} has no annotations folder; give the folder that '
            'tools/prepare_data.py wrote.')
    patient_labels = _read_patient_table(data_root / 'splits' /
                                         'patients.csv')

    classes: List[str] = []
    splits: Dict[str, Any] = {}
    for split in DATA_SPLITS:
        content = _read_json(data_root / 'annotations' / f'{split}.json')
        if content is None:
            continue
        classes = list(content.get('metainfo', {}).get('classes', classes))
        samples = content.get('data_list', [])
        patient_sites = {s['patient_id']: s.get('site') for s in samples}
        patient_class = {
            pid: patient_labels.get(pid) or _most_frequent_label(samples, pid)
            for pid in patient_sites
        }
        splits[split] = {
            'n_patients': len(patient_sites),
            'n_rois': len(samples),
            'rois_per_class': dict(Counter(s['label'] for s in samples)),
            'patients_per_class': dict(Counter(patient_class.values())),
            'sites': dict(sorted(Counter(patient_sites.values()).items(),
                                 key=lambda item: str(item[0]))),
        }
    return {'data_root': str(data_root), 'classes': classes,
            'splits': splits}


def read_readers(path: PathLike) -> Dict[str, Any]:
    """Read a ``readers.json`` written by ``tools/compare_readers.py``.

    Raises:
        ReportInputError: If the file is missing, is not JSON or lacks the
            ``readers`` list.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f'readers file {path} not found; write it '
                               'with tools/compare_readers.py.')
    try:
        content = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as error:
        raise ReportInputError(f'{path} is not valid JSON: {error}.') from None
    if not isinstance(content, dict) or not isinstance(
            content.get('readers'), list):
        raise ReportInputError(f'{path} lacks the "readers" list of '
                               'tools/compare_readers.py.')
    return content


def _read_split(split_dir: Path, run: Dict[str, Any]) -> Dict[str, Any]:
    entry: Dict[str, Any] = {
        'dir': str(split_dir),
        'summary': _read_json(split_dir / 'summary.json'),
        'metrics': _read_json(split_dir / 'metrics.json'),
        'test_run': _read_json(split_dir / 'test_run.json'),
        'threshold': _read_json(split_dir / 'threshold.json'),
        'predictions': None,
    }
    predictions = split_dir / 'predictions.csv'
    if predictions.is_file():
        entry['predictions'] = read_predictions_csv(predictions)
    for key, filename in (('metrics', 'metrics.json'),
                          ('predictions', 'predictions.csv'),
                          ('test_run', 'test_run.json')):
        if entry[key] is None:
            run['notes'].append(f'{run["name"]}: {split_dir / filename} is '
                                'missing.')
    return entry


def _read_json(path: Path) -> Optional[Any]:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding='utf-8'))


def _read_patient_table(path: Path) -> Dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline='', encoding='utf-8') as file:
        return {row['patient_id']: row['label']
                for row in csv.DictReader(file)}


def _most_frequent_label(samples: List[dict], patient_id: str) -> str:
    labels = Counter(s['label'] for s in samples
                     if s['patient_id'] == patient_id)
    return labels.most_common(1)[0][0]
