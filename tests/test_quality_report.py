"""One bad slice is skipped and reported, unless strict mode is asked."""
import csv
import json

import pytest

from helpers import write_phantom_cohort
from stbsm_mm.io import LabelmeError
from stbsm_mm.preprocessing import PreprocessConfig, prepare_cohort

FAST = PreprocessConfig(n4_iterations=(10, 10))


@pytest.fixture
def cohort_with_bad_outline(tmp_path):
    root = tmp_path / 'cohort'
    write_phantom_cohort(root)
    (root / 'annotations' / 'p2_a.json').write_text('{not json',
                                                    encoding='utf-8')
    return root


def test_bad_slice_skipped_and_listed(cohort_with_bad_outline, tmp_path):
    out_dir = tmp_path / 'prepared'
    manifest = prepare_cohort(cohort_with_bad_outline, out_dir, FAST,
                              external_sites=['Site B'], n_folds=0,
                              val_fraction=0.5, workers=1, progress=False)

    prepared = {record['roi_id'] for record in manifest['rois']}
    assert 'p2_a' not in prepared
    assert len(prepared) > 0

    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['n_skipped'] == 1
    assert quality['n_prepared'] == len(prepared)
    [problem] = quality['problems']
    assert problem['roi_ids'] == ['p2_a']
    assert problem['error'] == 'LabelmeError'
    assert 'p2_a.json' in problem['message']
    assert 'p2_a' in (out_dir / 'quality.md').read_text()

    all_rois = json.loads((out_dir / 'annotations' / 'all.json').read_text())
    assert 'p2_a' not in {info['roi_id'] for info in all_rois['data_list']}


def test_strict_mode_raises(cohort_with_bad_outline, tmp_path):
    with pytest.raises(LabelmeError, match='p2_a.json'):
        prepare_cohort(cohort_with_bad_outline, tmp_path / 'prepared', FAST,
                       external_sites=['Site B'], n_folds=0,
                       val_fraction=0.5, workers=1, progress=False,
                       strict=True)


def test_clean_cohort_reports_no_problem(tmp_path):
    root = tmp_path / 'cohort'
    write_phantom_cohort(root)
    out_dir = tmp_path / 'prepared'
    prepare_cohort(root, out_dir, FAST, external_sites=['Site B'], n_folds=0,
                   val_fraction=0.5, workers=2, progress=False)
    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['n_skipped'] == 0
    assert quality['problems'] == []
    assert quality['table_problems'] == []
    report = (out_dir / 'quality.md').read_text()
    assert '## Slices' not in report
    assert '## Table rows' not in report
    # The external site has one SM patient only, which is worth a warning.
    [warning] = quality['split_warnings']
    assert "split 'external' has no ROI of class 'STB'" in warning
    assert warning in report


def test_cli_strict_exit_status(cohort_with_bad_outline, tmp_path):
    from conftest import run_tool
    result = run_tool('tools/prepare_data.py', cohort_with_bad_outline,
                      tmp_path / 'prepared', '--external-sites', 'Site B',
                      '--folds', '0', '--val-fraction', '0.5', '--strict',
                      '--no-progress', expect_ok=False)
    assert result.returncode == 1
    assert 'p2_a.json' in result.output

    result = run_tool('tools/prepare_data.py', cohort_with_bad_outline,
                      tmp_path / 'lenient', '--external-sites', 'Site B',
                      '--folds', '0', '--val-fraction', '0.5',
                      '--no-progress')
    assert 'Skipped 1 ROI(s)' in result.output


def test_patient_coverage_unit():
    from stbsm_mm.cohort import check_patient_class_coverage

    warnings = check_patient_class_coverage(
        {'train': ['SM'], 'val': ['SM', 'SM'], 'external': ['STB', 'SM']},
        {'train': ['SM'], 'val': ['STB', 'SM'], 'external': ['STB', 'SM']},
        ['STB', 'SM'])
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "split 'val' has ROIs of class 'STB' but no patient labelled 'STB'")
    assert 'patients: SM 2' in warnings[0]


def test_patient_coverage_skips_absent_class():
    from stbsm_mm.cohort import check_patient_class_coverage

    # No ROI of STB at all: check_class_coverage reports that instead.
    warnings = check_patient_class_coverage(
        {'val': ['SM']}, {'val': ['SM']}, ['STB', 'SM'])
    assert warnings == []


def test_real_cohort_val_patients_one_class(spider_prepared):
    # The demo cohort's two validation patients are both labelled
    # no_modic, although three of their ROIs show a Modic change.
    quality = json.loads((spider_prepared / 'quality.json').read_text())
    patients = {}
    with open(spider_prepared / 'splits' / 'patients.csv') as file:
        for row in csv.DictReader(file):
            patients.setdefault(row['split'], []).append(row['label'])
    assert set(patients['val']) == {'no_modic'}
    assert any(
        warning.startswith("split 'val' has ROIs of class 'modic' but no "
                           "patient labelled 'modic'")
        for warning in quality['split_warnings'])
