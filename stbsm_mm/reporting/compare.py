"""Tables and tests across models: the study's table and DeLong tests.

The table has one row per model with accuracy, precision, sensitivity,
specificity, F1 and AUC, each with its 95% confidence interval, for every
split and level (image, patient) as stored in ``summary.json``. DeLong's
test compares the image-level AUCs of each pair of models on the ROIs both
models scored.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any, Dict, List, Sequence, Tuple

from ..evaluation.statistics import delong_test

#: Figures of the study's table: (key in summary.json, column header).
TABLE_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ('accuracy', 'ACC'),
    ('precision', 'precision'),
    ('sensitivity', 'sensitivity'),
    ('specificity', 'specificity'),
    ('f1', 'F1'),
    ('auc', 'AUC'),
)

#: Levels of ``summary.json``.
LEVELS = ('image', 'patient')


def study_table(runs: Sequence[Dict[str, Any]], split: str,
                level: str) -> List[Dict[str, Any]]:
    """Return one row per model with the table's figures and intervals.

    Args:
        runs: Results of :func:`~stbsm_mm.reporting.collect.collect_run`.
        split: Test output folder name, e.g. ``'external'``.
        level: ``'image'`` or ``'patient'``.

    Returns:
        list[dict]: ``model``, ``n`` (images or patients) and ``figures``
        (key -> ``{value, low, high, method}`` from ``summary.json``, or
        None when undefined) for each model that has results on ``split``.

    Raises:
        ValueError: If ``level`` is not ``'image'`` or ``'patient'``.

    Examples:
        >>> rows = study_table(runs, 'external', 'patient')  # doctest: +SKIP
        >>> rows[0]['figures']['auc']['value']
    """
    if level not in LEVELS:
        raise ValueError(f'level must be one of {LEVELS}, got {level!r}.')
    rows = []
    for run in runs:
        entry = run['splits'].get(split)
        if entry is None:
            continue
        summary = entry['summary']
        figures = {key: summary[level].get(key) for key, _ in TABLE_COLUMNS}
        n_key = 'n_images' if level == 'image' else 'n_patients'
        rows.append({'model': run['name'], 'n': summary.get(n_key),
                     'figures': figures})
    return rows


def model_auc_tests(runs: Sequence[Dict[str, Any]],
                    split: str) -> List[Dict[str, Any]]:
    """Compare the image-level AUCs of each pair of models with DeLong's test.

    Each pair is tested on the ROIs that both models scored (matched by
    ``roi_id``). A pair that cannot be tested (no predictions, different
    positive classes or true labels, fewer than two images of a class) gets
    an entry with ``skipped`` saying why.

    Args:
        runs: Results of :func:`~stbsm_mm.reporting.collect.collect_run`.
        split: Test output folder name.

    Returns:
        list[dict]: ``split``, ``model_a``, ``model_b``, ``n_images`` and
        either the fields of
        :func:`~stbsm_mm.evaluation.statistics.delong_test` or ``skipped``.

    Examples:
        >>> tests = model_auc_tests(runs, 'external')  # doctest: +SKIP
        >>> tests[0]['p_value']
    """
    tested = [run for run in runs if split in run['splits']]
    results = []
    for run_a, run_b in combinations(tested, 2):
        result = {'split': split, 'model_a': run_a['name'],
                  'model_b': run_b['name'], 'n_images': 0}
        try:
            result.update(_delong_on_common_rois(run_a['splits'][split],
                                                 run_b['splits'][split]))
        except ValueError as error:
            result['skipped'] = str(error)
        results.append(result)
    return results


def _delong_on_common_rois(entry_a: Dict[str, Any],
                           entry_b: Dict[str, Any]) -> Dict[str, Any]:
    if entry_a['predictions'] is None or entry_b['predictions'] is None:
        raise ValueError('predictions.csv is missing')
    positive_a = entry_a['summary']['positive_class']
    positive_b = entry_b['summary']['positive_class']
    if positive_a != positive_b:
        raise ValueError(f'positive classes differ ({positive_a} vs '
                         f'{positive_b})')

    # Match the ROIs of the two models by roi_id.
    by_roi_b = {record['roi_id']: record
                for record in entry_b['predictions']}
    pairs = [(record, by_roi_b[record['roi_id']])
             for record in entry_a['predictions']
             if record['roi_id'] in by_roi_b]
    if not pairs:
        raise ValueError('the models share no ROI')
    mismatched = [a['roi_id'] for a, b in pairs if a['label'] != b['label']]
    if mismatched:
        raise ValueError(f'true labels differ on ROIs {mismatched[:3]}')

    score_key = f'score_{positive_a}'
    labels = [a['label'] == positive_a for a, _ in pairs]
    result = delong_test(labels, [a[score_key] for a, _ in pairs],
                         [b[score_key] for _, b in pairs],
                         positive_label=True)
    result['n_images'] = len(pairs)
    return result
