"""Build the report of one or more models: HTML page, Markdown and JSON.

Steps: collect each work dir's results, summarise the prepared data, lay
out the study's table and the tests between models and against readers,
draw the figures, record provenance, then write ``report.html``,
``report.md``, ``report.json`` and ``figures/*.png|svg`` to the output
folder. An input that is missing is left out with a note in the report.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from mmengine.logging import MMLogger

from ..utils.fileio import atomic_write_json, atomic_write_text
from ..visualization.figures import (plot_confusion_matrix, plot_cv_folds,
                                     plot_reliability_diagram,
                                     plot_roc_curves)
from .collect import (DEFAULT_SPLITS, ReportInputError, collect_run,
                      read_data_summary, read_readers)
from .compare import LEVELS, TABLE_COLUMNS, model_auc_tests, study_table
from .render import render_html, render_markdown

PathLike = Union[str, Path]

TITLE = 'stbsm-mm report'

#: Names of the standard test output folders in the report's headings.
SPLIT_TITLES = {
    'val': 'internal validation (val)',
    'external': 'external test (external)',
}


def build_report(work_dirs: Sequence[PathLike],
                 out_dir: PathLike,
                 names: Optional[Sequence[str]] = None,
                 readers: Optional[PathLike] = None,
                 splits: Sequence[str] = DEFAULT_SPLITS) -> Dict[str, Any]:
    """Write ``report.html``, ``report.md``, ``report.json`` and figures.

    Args:
        work_dirs: One work dir per model, each with test output folders
            (``<work_dir>/<split>/summary.json`` ...) written by
            ``tools/test.py``, or ``cv_summary.json``.
        out_dir: Output folder; created if missing.
        names: Model names in the order of ``work_dirs`` (default: the
            folder names).
        readers: Optional ``readers.json`` of ``tools/compare_readers.py``.
        splits: Test output folders to report, in order.

    Returns:
        dict: The content written to ``report.json``.

    Raises:
        ReportInputError: If ``work_dirs`` is empty, ``names`` does not
            match it or repeats a name, a work dir has no test outputs, or
            ``readers`` is missing or invalid.

    Examples:
        >>> report = build_report(['work_dirs/resnet34_stbsm'],
        ...                       'work_dirs/report')  # doctest: +SKIP
        >>> sorted(report)[:3]
        ['created', 'data', 'model_tests']
    """
    logger = MMLogger.get_current_instance()
    out_dir = Path(out_dir)
    names = _check_names(work_dirs, names)

    # Collect the inputs.
    runs = [collect_run(work_dir, name, splits)
            for work_dir, name in zip(work_dirs, names)]
    notes = [note for run in runs for note in run['notes']]
    reader_results = read_readers(readers) if readers else None
    data = _data_summary(runs, notes)

    # Tables and tests.
    tables = {(split, level): study_table(runs, split, level)
              for split in splits for level in LEVELS}
    model_tests = [test for split in splits
                   for test in model_auc_tests(runs, split)]

    # Figures.
    plots = _draw_figures(runs, splits, reader_results, out_dir / 'figures',
                          notes)

    report = {
        'title': TITLE,
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'splits': list(splits),
        'models': [_model_record(run) for run in runs],
        'data': data,
        'model_tests': model_tests,
        'readers': reader_results,
        'plots': [{key: (str(value) if isinstance(value, Path) else value)
                   for key, value in plot.items()} for plot in plots],
        'notes': notes,
    }

    # Write the three files.
    blocks = _report_blocks(report, runs, tables, plots)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / 'report.json', report)
    atomic_write_text(out_dir / 'report.md', render_markdown(blocks, out_dir))
    atomic_write_text(out_dir / 'report.html', render_html(blocks, TITLE))
    logger.info(f'Report of {len(runs)} model(s) written to '
                f'{out_dir / "report.html"}, report.md and report.json '
                f'({len(plots)} figures, {len(notes)} notes).')
    return report


def _check_names(work_dirs: Sequence[PathLike],
                 names: Optional[Sequence[str]]) -> List[str]:
    if not work_dirs:
        raise ReportInputError('work_dirs is empty; give at least one work '
                               'dir with test outputs.')
    if names is None:
        names = [Path(work_dir).resolve().name for work_dir in work_dirs]
    elif len(names) != len(work_dirs):
        raise ReportInputError(
            f'{len(names)} names for {len(work_dirs)} work dirs; give one '
            'name per work dir, in the same order.')
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ReportInputError(
            f'model names {repeated} are used twice; give distinct names '
            '(--names).')
    slugs = [_slug(str(name)) for name in names]
    if len(set(slugs)) != len(slugs):
        raise ReportInputError(
            f'model names {list(names)} give the same figure file names '
            f'({slugs}); give names that differ in letters or digits '
            '(--names).')
    return [str(name) for name in names]


def _data_summary(runs: List[Dict[str, Any]],
                  notes: List[str]) -> Optional[Dict[str, Any]]:
    records = [entry['test_run'] for run in runs
               for entry in run['splits'].values() if entry['test_run']]
    records += [run['train_run'] for run in runs if run['train_run']]
    roots = [record.get('data_root') for record in records
             if record.get('data_root')]
    manifests = {record.get('manifest_sha256') for record in records
                 if record.get('manifest_sha256')}
    if len(manifests) > 1:
        notes.append(f'The runs used {len(manifests)} different prepared '
                     'data sets (manifest SHA-256 differ); the data summary '
                     'describes the first.')
    if not roots:
        notes.append('No run records a data root, so the data summary is '
                     'left out.')
        return None
    try:
        return read_data_summary(roots[0])
    except ReportInputError as error:
        notes.append(f'Data summary left out: {error}')
        return None


def _model_record(run: Dict[str, Any]) -> Dict[str, Any]:
    splits = {}
    for split, entry in run['splits'].items():
        summary = entry['summary']
        splits[split] = {
            'positive_class': summary.get('positive_class'),
            'threshold': summary.get('threshold'),
            'aggregation': summary.get('aggregation'),
            'n_images': summary.get('n_images'),
            'n_patients': summary.get('n_patients'),
            'image': summary.get('image'),
            'patient': summary.get('patient'),
            'calibration': summary.get('calibration'),
            'youden_threshold': entry['threshold'],
            'provenance': _provenance(entry['test_run']),
        }
    return {
        'name': run['name'],
        'work_dir': run['work_dir'],
        'splits': splits,
        'training': _provenance(run['train_run']),
        'cv_summary': run['cv_summary'],
    }


def _provenance(record: Optional[Dict[str, Any]]) -> Optional[dict]:
    if record is None:
        return None
    return {
        'config': record.get('config'),
        'seed': record.get('seed'),
        'data_root': record.get('data_root'),
        'manifest_sha256': record.get('manifest_sha256'),
        'checkpoint_sha256': record.get('checkpoint_sha256'),
        'versions': record.get('versions'),
    }


def _draw_figures(runs: List[Dict[str, Any]], splits: Sequence[str],
                  reader_results: Optional[Dict[str, Any]], figure_dir: Path,
                  notes: List[str]) -> List[Dict[str, Any]]:
    plots = []

    def add(plot_id: str, title: str, paths: List[Path]) -> None:
        plots.append({'id': plot_id, 'title': title, 'png': paths[0],
                      'svg': paths[1]})

    # ROC curves of all models per split, readers as points.
    for split in splits:
        curves = [_roc_curve(run, split, notes) for run in runs]
        curves = [curve for curve in curves if curve is not None]
        if not curves:
            continue
        points = _reader_points(reader_results, split)
        title = f'ROC curves, {_split_title(split)}, image level'
        add(f'roc_{split}', title,
            plot_roc_curves(curves, figure_dir / f'roc_{_slug(split)}',
                            readers=points, title=title))

    # Confusion matrix and reliability diagram of each model and split.
    for run in runs:
        for split, entry in run['splits'].items():
            slug = f'{_slug(run["name"])}_{_slug(split)}'
            metrics = entry['metrics']
            if metrics and metrics.get('confusion_matrix'):
                title = (f'{run["name"]}, {_split_title(split)}, image '
                         'level')
                add(f'confusion_{slug}', f'Confusion matrix: {title}',
                    plot_confusion_matrix(metrics['confusion_matrix'],
                                          metrics['classes'],
                                          figure_dir / f'confusion_{slug}',
                                          title=title))
            reliability = _reliability_inputs(entry)
            if reliability is not None:
                title = (f'{run["name"]}, {_split_title(split)}, image '
                         'level')
                add(f'reliability_{slug}', f'Reliability diagram: {title}',
                    plot_reliability_diagram(
                        figure_dir / f'reliability_{slug}', title=title,
                        **reliability))

    # Per-fold figures of cross-validation.
    for run in runs:
        if run['cv_summary'] is not None:
            title = f'Cross-validation of {run["name"]}'
            add(f'cv_{_slug(run["name"])}', title,
                plot_cv_folds(run['cv_summary'],
                              figure_dir / f'cv_{_slug(run["name"])}',
                              title=title))
    return plots


def _roc_curve(run: Dict[str, Any], split: str,
               notes: List[str]) -> Optional[Dict[str, Any]]:
    entry = run['splits'].get(split)
    if entry is None or entry['predictions'] is None:
        return None
    positive = entry['summary']['positive_class']
    labels = [record['label'] == positive for record in entry['predictions']]
    if all(labels) or not any(labels):
        notes.append(f'{run["name"]}: the {split} ROIs contain one class only, '
                     'so its ROC curve is left out.')
        return None
    auc = entry['summary']['image'].get('auc') or {}
    return {
        'name': run['name'],
        'labels': labels,
        'scores': [record[f'score_{positive}']
                   for record in entry['predictions']],
        'auc_ci': (auc.get('low'), auc.get('high')),
    }


def _reader_points(reader_results: Optional[Dict[str, Any]],
                   split: str) -> List[Dict[str, Any]]:
    # Readers go on the ROC of the split whose predictions they were
    # compared with. The ROC curves are image level, so patient-level
    # readers are not drawn.
    if reader_results is None or reader_results.get('level') != 'image':
        return []
    compared_splits = {Path(model.get('pred_dir', '')).name
                       for model in reader_results.get('models', [])}
    if split not in compared_splits:
        return []
    return [{'name': reader['reader'],
             'sensitivity': reader['sensitivity']['value'],
             'specificity': reader['specificity']['value']}
            for reader in reader_results['readers']
            if reader.get('sensitivity', {}).get('value') is not None
            and reader.get('specificity', {}).get('value') is not None]


def _reliability_inputs(entry: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    calibration = (entry['summary'].get('calibration') or {}).get('image')
    if calibration and calibration.get('reliability'):
        reliability = dict(calibration['reliability'])
        reliability.setdefault('brier', calibration.get('brier'))
        return {'reliability': reliability}
    if entry['predictions'] is None:
        return None
    positive = entry['summary']['positive_class']
    return {
        'labels': [record['label'] == positive
                   for record in entry['predictions']],
        'scores': [record[f'score_{positive}']
                   for record in entry['predictions']],
    }


def _report_blocks(report: Dict[str, Any], runs: List[Dict[str, Any]],
                   tables: Dict[tuple, List[dict]],
                   plots: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    blocks: List[Dict[str, Any]] = [
        _heading(1, TITLE),
        _paragraph(
            f'Models: {", ".join(run["name"] for run in runs)}. Splits: '
            f'{", ".join(report["splits"])}. Created {report["created"]}.'),
    ]
    if report['notes']:
        blocks += [_heading(2, 'Missing inputs'),
                   {'type': 'list', 'items': report['notes']}]
    blocks += _data_blocks(report['data'])
    blocks += _performance_blocks(report, tables)
    blocks += _cross_validation_blocks(runs)
    blocks += _test_blocks(report['model_tests'], report['readers'])
    blocks.append(_heading(2, 'Figures'))
    for plot in plots:
        blocks.append({'type': 'image', 'path': plot['png'],
                       'caption': plot['title']})
    blocks += _provenance_blocks(report['models'])
    return blocks


def _data_blocks(data: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    blocks = [_heading(2, 'Data')]
    if data is None:
        return blocks + [_paragraph('No data summary (see Missing inputs).')]
    classes = data['classes']
    headers = (['split', 'patients', 'ROIs'] +
               [f'patients {name}' for name in classes] +
               [f'ROIs {name}' for name in classes] + ['sites (patients)'])
    rows = []
    for split, counts in data['splits'].items():
        sites = '; '.join(f'{site}: {number}'
                          for site, number in counts['sites'].items())
        rows.append([split, str(counts['n_patients']), str(counts['n_rois'])] +
                    [str(counts['patients_per_class'].get(name, 0))
                     for name in classes] +
                    [str(counts['rois_per_class'].get(name, 0))
                     for name in classes] + [sites])
    return blocks + [
        {'type': 'table', 'headers': headers, 'rows': rows},
        _paragraph('A patient counts under its diagnosis from '
                   'splits/patients.csv. Counts come from the prepared '
                   'data\'s annotation files.'),
    ]


def _performance_blocks(report: Dict[str, Any],
                        tables: Dict[tuple, List[dict]]) -> List[dict]:
    blocks = [_heading(2, 'Diagnostic performance')]
    headers = ['model', 'n'] + [header for _, header in TABLE_COLUMNS]
    for (split, level), rows in tables.items():
        blocks.append(_heading(3, f'{_split_title(split)}, {level} level'))
        if not rows:
            blocks.append(_paragraph(f'No model has {split} results.'))
            continue
        blocks.append({
            'type': 'table',
            'headers': headers,
            'rows': [[row['model'], str(row['n'])] +
                     [_percent_with_interval(row['figures'][key])
                      for key, _ in TABLE_COLUMNS] for row in rows],
        })
    positives = sorted({str(entry['positive_class'])
                        for model in report['models']
                        for entry in model['splits'].values()})
    blocks.append(_paragraph(
        f'Percent with 95% confidence intervals; positive class '
        f'{", ".join(positives) or "n/a"}. Precision, sensitivity and F1 are '
        'those of the positive class. Intervals: Wilson for ACC, precision, '
        'sensitivity and specificity; a bootstrap that resamples patients '
        'for F1 and AUC. Image-level Wilson intervals treat the ROIs of one '
        'patient as independent, which makes them too narrow.'))
    return blocks


def _cross_validation_blocks(runs: List[Dict[str, Any]]) -> List[dict]:
    blocks = []
    for run in runs:
        if run['cv_summary'] is None:
            continue
        summary = run['cv_summary'].get('summary', {})
        pooled = run['cv_summary'].get('pooled_out_of_fold') or {}
        rows = [[name, _percent(entry.get('mean')), _percent(entry.get('std')),
                 f'{entry.get("n_folds_used")}/{entry.get("n_folds")}',
                 _percent(pooled.get(name))]
                for name, entry in summary.items()]
        blocks += [
            _heading(3, f'Cross-validation of {run["name"]}'),
            {'type': 'table',
             'headers': ['figure', 'mean', 'SD', 'folds used', 'pooled'],
             'rows': rows},
            _paragraph('Image level, percent. Mean and sample SD over the '
                       'folds that define the figure; "pooled" is computed '
                       'on all out-of-fold predictions together.'),
        ]
    return blocks


def _test_blocks(model_tests: List[dict],
                 reader_results: Optional[dict]) -> List[dict]:
    blocks = [_heading(2, 'Tests between models')]
    if model_tests:
        rows = []
        for test in model_tests:
            row = [test['split'], test['model_a'], test['model_b'],
                   str(test['n_images'])]
            if 'skipped' in test:
                row += ['', '', '', f'not tested: {test["skipped"]}']
            else:
                row += [f'{test["auc_a"]:.3f}', f'{test["auc_b"]:.3f}',
                        _number(test['z'], 2), _p_value(test['p_value'])]
            rows.append(row)
        blocks += [
            {'type': 'table',
             'headers': ['split', 'model A', 'model B', 'ROIs', 'AUC A',
                         'AUC B', 'z', 'p (DeLong)'],
             'rows': rows},
            _paragraph('DeLong, DeLong and Clarke-Pearson (1988) test of '
                       'two correlated image-level AUCs on the ROIs both '
                       'models scored. It treats ROIs as independent, so '
                       'with several ROIs per patient its p-values are too '
                       'small.'),
        ]
    else:
        blocks.append(_paragraph('Fewer than two models share a split, so '
                                 'no pair was tested.'))

    blocks.append(_heading(2, 'Readers'))
    if reader_results is None:
        return blocks + [_paragraph('No readers file was given (--readers).')]
    level = reader_results.get('level', 'image')
    reader_rows = [[reader['reader'], str(reader.get('n', ''))] +
                   [_percent_with_interval(reader.get(key))
                    for key in ('accuracy', 'sensitivity', 'specificity')]
                   for reader in reader_results['readers']]
    blocks += [
        {'type': 'table',
         'headers': ['reader', 'n', 'ACC', 'sensitivity', 'specificity'],
         'rows': reader_rows},
        _paragraph(f'{level.capitalize()} level; positive class '
                   f'{reader_results.get("positive_class")}. Percent with '
                   '95% confidence intervals.'),
    ]
    mcnemar = reader_results.get('mcnemar') or []
    if mcnemar:
        blocks += [
            {'type': 'table',
             'headers': ['model', 'reader', 'n', 'model right, reader wrong',
                         'model wrong, reader right', 'statistic', 'p',
                         'method'],
             'rows': [[str(test.get('model')), str(test.get('reader')),
                       str(test.get('n')),
                       str(test.get('model_correct_reader_wrong')),
                       str(test.get('model_wrong_reader_correct')),
                       _number(test.get('statistic'), 3),
                       _p_value(test.get('p_value')),
                       str(test.get('method'))] for test in mcnemar]},
            _paragraph('McNemar (1947) tests of paired correctness, model '
                       'against reader, on the same cases.'),
        ]
    return blocks


def _provenance_blocks(models: List[Dict[str, Any]]) -> List[dict]:
    rows, versions, thresholds = [], [], []
    for model in models:
        for split, entry in model['splits'].items():
            record = entry['provenance'] or {}
            rows.append([model['name'], split,
                         Path(str(record.get('config'))).name,
                         str(record.get('seed')), str(entry['threshold']),
                         str(record.get('checkpoint_sha256')),
                         str(record.get('manifest_sha256'))])
            if record.get('versions'):
                text = ', '.join(f'{package} {version}' for package, version
                                 in record['versions'].items())
                versions.append(f'{model["name"]} ({split}): {text}')
            youden = entry['youden_threshold']
            if youden:
                thresholds.append(
                    f'{model["name"]} ({split}): Youden threshold '
                    f'{youden.get("threshold")} chosen on '
                    f'{youden.get("split")} ({youden.get("n_images")} '
                    f'images, positive class {youden.get("positive_class")})')
    blocks = [_heading(2, 'Provenance')]
    if not rows:
        return blocks + [_paragraph('No test records (test_run.json).')]
    blocks.append({'type': 'table',
                   'headers': ['model', 'split', 'config', 'seed',
                               'threshold', 'checkpoint SHA-256',
                               'data manifest SHA-256'],
                   'rows': rows})
    if thresholds:
        blocks.append({'type': 'list', 'items': thresholds})
    blocks += [_paragraph('Package versions of each test run:'),
               {'type': 'list', 'items': versions}]
    return blocks


def _heading(level: int, text: str) -> Dict[str, Any]:
    return {'type': 'heading', 'level': level, 'text': text}


def _paragraph(text: str) -> Dict[str, Any]:
    return {'type': 'paragraph', 'text': text}


def _split_title(split: str) -> str:
    return SPLIT_TITLES.get(split, split)


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', text).strip('-') or 'model'


def _percent_with_interval(entry: Optional[Dict[str, Any]]) -> str:
    if not entry or entry.get('value') is None:
        return 'undefined'
    text = f'{100 * entry["value"]:.1f}'
    if entry.get('low') is not None and entry.get('high') is not None:
        text += f' ({100 * entry["low"]:.1f}-{100 * entry["high"]:.1f})'
    return text


def _percent(value: Optional[float]) -> str:
    return 'undefined' if value is None else f'{100 * value:.1f}'


def _number(value: Optional[float], digits: int) -> str:
    return 'undefined' if value is None else f'{value:.{digits}f}'


def _p_value(value: Optional[float]) -> str:
    if value is None:
        return 'undefined'
    return '<0.001' if value < 0.001 else f'{value:.3f}'
