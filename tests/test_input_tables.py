"""Input checks of patients.csv and rois.csv, alone and through prepare.

Structural problems (a missing column) always stop. Row-level problems
(unknown or duplicate ids, a patient with two sites or diagnoses) skip the
rows they affect and are listed in the data-quality report, unless strict
mode is asked for. The tables are written in ``tmp_path``; the cohorts that
are prepared use 64x64 PNG slices with N4 off to stay fast.
"""
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL.Image
import pytest

from helpers import disc_phantom, load_prepare_data_tool, rectangle, \
    write_labelme, write_table
from stbsm_mm.cohort import (CohortError, TableProblem, check_class_coverage,
                             load_cohort)
from stbsm_mm.preprocessing import PreprocessConfig, prepare_cohort

PATIENT_HEADER = ('patient_id', 'site', 'diagnosis')
ROI_HEADER = ('roi_id', 'patient_id', 'annotation')
FAST = PreprocessConfig(n4=False)


def write_tables(root: Path, patients: Sequence[Sequence[str]],
                 rois: Sequence[Sequence[str]],
                 patient_header: Sequence[str] = PATIENT_HEADER,
                 roi_header: Sequence[str] = ROI_HEADER) -> Path:
    write_table(root / 'patients.csv', patient_header, patients)
    write_table(root / 'rois.csv', roi_header, rois)
    return root


def roi(roi_id: str, patient_id: str) -> tuple:
    return (roi_id, patient_id, f'ann/{roi_id}.json')


def only_problem(root: Path) -> TableProblem:
    cohort = load_cohort(root, strict=False)
    assert len(cohort.problems) == 1, [p.message for p in cohort.problems]
    return cohort.problems[0]


# Structural problems always stop.


def test_missing_column_stops_lenient(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A')], [roi('r1', 'p1')],
                        patient_header=('patient_id', 'hospital'))

    with pytest.raises(CohortError) as error:
        load_cohort(root, strict=False)
    message = str(error.value)
    assert str(root / 'patients.csv') in message
    assert "missing column(s) ['site']" in message
    assert "found ['patient_id', 'hospital']" in message


def test_missing_column_case_hint(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB')], [roi('r1', 'p1')],
                        patient_header=('Patient ID', 'Site', 'diagnosis'))

    with pytest.raises(CohortError) as error:
        load_cohort(root, strict=False)
    message = str(error.value)
    assert "'Patient ID' -> 'patient_id'" in message
    assert "'Site' -> 'site'" in message


def test_semicolon_table_hint(tmp_path):
    write_tables(tmp_path, [], [roi('r1', 'p1')])
    (tmp_path / 'patients.csv').write_text(
        'patient_id;site;diagnosis\np1;A;STB\n', encoding='utf-8')

    with pytest.raises(CohortError, match='semicolons or tabs'):
        load_cohort(tmp_path, strict=False)


def test_repeated_header_column(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB', 'SM')],
                        [roi('r1', 'p1')],
                        patient_header=('patient_id', 'site', 'diagnosis',
                                        'diagnosis'))

    with pytest.raises(CohortError, match=r"\['diagnosis'\] appear more"):
        load_cohort(root, strict=False)


def test_undecodable_table(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB')], [roi('r1', 'p1')])
    (root / 'rois.csv').write_bytes(b'roi_id,patient_id,annotation\n'
                                    b'r1,p1,\xff\xfe.json\n')

    with pytest.raises(CohortError, match='neither UTF-8 nor GBK') as error:
        load_cohort(root, strict=False)
    assert 'rois.csv' in str(error.value)


def test_gbk_table_with_chinese_ids(tmp_path):
    root = write_tables(tmp_path, [], [])
    (root / 'patients.csv').write_bytes(
        'patient_id,site,diagnosis\n患者1,医院甲,STB\n患者2,医院乙,SM\n'
        .encode('gbk'))
    (root / 'rois.csv').write_bytes(
        'roi_id,patient_id,annotation\n病灶1,患者1,标注/1.json\n'
        '病灶2,患者2,标注/2.json\n'.encode('gb18030'))

    cohort = load_cohort(root)

    assert cohort.patients['患者1'].site == '医院甲'
    assert [r.roi_id for r in cohort.rois] == ['病灶1', '病灶2']
    assert cohort.rois[0].annotation == root / '标注' / '1.json'


def test_blank_rows_ignored(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB'), ('', '', ''),
                                   ('p2', 'A', 'SM')],
                        [roi('r1', 'p1'), ('', '', ''), roi('r2', 'p2')])

    cohort = load_cohort(root)

    assert list(cohort.patients) == ['p1', 'p2']
    assert cohort.problems == []
    assert cohort.skipped_roi_rows == 0


# Row-level problems: listed and skipped, or raised in strict mode.


def test_unknown_patient_skipped(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p9')])

    cohort = load_cohort(root, strict=False)

    assert [r.roi_id for r in cohort.rois] == ['r1']
    assert cohort.skipped_roi_rows == 1
    [problem] = cohort.problems
    assert (problem.table, problem.line) == ('rois.csv', 3)
    assert (problem.column, problem.value) == ('patient_id', 'p9')
    assert problem.roi_ids == ['r2']
    assert problem.action == 'skipped'
    assert problem.message.startswith(f'{root / "rois.csv"}, line 3: ')
    assert 'Add the patient or fix the id' in problem.message


def test_two_diagnoses_skip_patient(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', 'SM'),
                                   ('p1', 'A', 'SM')],
                        [roi('r1', 'p1'), roi('r2', 'p2'), roi('r3', 'p1')])

    cohort = load_cohort(root, strict=False)

    assert list(cohort.patients) == ['p2']
    assert [r.roi_id for r in cohort.rois] == ['r2']
    problem = only_problem(root)
    assert (problem.table, problem.line) == ('patients.csv', 4)
    assert (problem.column, problem.value) == ('diagnosis', 'SM')
    assert problem.patient_ids == ['p1']
    assert problem.roi_ids == ['r1', 'r3']
    assert "'STB' on line 2 and 'SM' on line 4" in problem.message


def test_two_sites_skip_patient(tmp_path):
    root = write_tables(tmp_path, [('p1', 'Dev', 'STB'), ('p2', 'Dev', 'SM'),
                                   ('p1', 'External', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p2')])

    problem = only_problem(root)

    assert (problem.line, problem.column) == (4, 'site')
    assert problem.value == 'External'
    assert problem.patient_ids == ['p1']
    assert problem.roi_ids == ['r1']
    assert "'Dev' on line 2 and 'External' on line 4" in problem.message
    assert 'development and external test sets' in problem.message


def test_identical_patient_rows_keep_one(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB'), ('p1', 'A', '')],
                        [roi('r1', 'p1')])

    cohort = load_cohort(root, strict=False)

    assert cohort.patients['p1'].diagnosis == 'STB'
    assert [r.roi_id for r in cohort.rois] == ['r1']
    [problem] = cohort.problems
    assert problem.action == 'ignored'
    assert problem.line == 3


def test_duplicate_roi_id_different_rows(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p1'),
                         ('r1', 'p1', 'ann/other.json')])

    cohort = load_cohort(root, strict=False)

    assert [r.roi_id for r in cohort.rois] == ['r2']
    assert cohort.skipped_roi_rows == 2
    [problem] = cohort.problems
    assert (problem.line, problem.value) == (4, 'r1')
    assert 'lines 2, 4' in problem.message
    assert problem.roi_ids == ['r1']


def test_duplicate_roi_id_identical_rows(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r1', 'p1')])

    cohort = load_cohort(root, strict=False)

    assert [r.roi_id for r in cohort.rois] == ['r1']
    [problem] = cohort.problems
    assert problem.action == 'ignored'
    assert "roi_id 'r1' appears twice (lines 2 and 3)" in problem.message


def test_other_row_problems_listed(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB'), ('', 'A', 'SM'),
                                   ('p3', '', 'SM'), ('p4', 'A', '')], [
        roi('r1', 'p1'),
        ('', 'p1', 'ann/x.json'),
        ('r3', 'p1', ''),
        roi('r4', 'p4'),
        roi('r5', 'p3'),
    ])
    with open(root / 'rois.csv', 'a', encoding='utf-8') as file:
        file.write('r6,p1,ann/r6.json,extra\n')

    cohort = load_cohort(root, strict=False)

    assert [r.roi_id for r in cohort.rois] == ['r1']
    assert cohort.skipped_roi_rows == 5
    found = {(p.table, p.line, p.column) for p in cohort.problems}
    assert found == {
        ('patients.csv', 3, 'patient_id'),
        ('patients.csv', 4, 'site'),
        ('rois.csv', 3, 'roi_id'),
        ('rois.csv', 4, 'annotation'),
        ('rois.csv', 5, 'label'),
        ('rois.csv', 7, None),
    }
    no_site = next(p for p in cohort.problems if p.column == 'site')
    assert no_site.roi_ids == ['r5']


def test_label_not_in_classes_skipped(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', 'SM')],
                        [('r1', 'p1', 'a.json', ''),
                         ('r2', 'p2', 'b.json', 'TB')],
                        roi_header=('roi_id', 'patient_id', 'annotation',
                                    'label'))

    cohort = load_cohort(root, classes=['STB', 'SM'], strict=False)

    assert [r.roi_id for r in cohort.rois] == ['r1']
    [problem] = cohort.problems
    assert (problem.line, problem.column, problem.value) == (3, 'label', 'TB')


def test_strict_raises_the_same_message(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB'), ('p1', 'B', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p9')])
    first = load_cohort(root, strict=False).problems[0]

    with pytest.raises(CohortError) as error:
        load_cohort(root, strict=True)

    assert str(error.value) == first.message
    assert 'patients.csv, line 3' in str(error.value)


def test_strict_is_the_default(tmp_path):
    root = write_tables(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p9')])

    with pytest.raises(CohortError, match="patient_id 'p9' of ROI 'r2'"):
        load_cohort(root)


# Class coverage of the splits.


def test_coverage_validation_warns():
    warnings = check_class_coverage(
        {'train': ['STB', 'SM'], 'val': ['STB', 'STB'], 'external': []},
        ['STB', 'SM'])

    [warning] = warnings
    assert "split 'val' has no ROI of class 'SM' (STB 2)" in warning
    assert 'AUC' in warning


@pytest.mark.parametrize('split', ['train', 'fold2_train'])
def test_coverage_training_raises(split):
    with pytest.raises(CohortError) as error:
        check_class_coverage({split: ['SM'], 'val': ['STB', 'SM']},
                             ['STB', 'SM'])
    message = str(error.value)
    assert f"split {split!r} has no ROI of class 'STB' (SM 1)" in message
    assert 'cannot learn' in message


def test_coverage_training_warning_when_lenient():
    warnings = check_class_coverage({'train': ['SM'], 'val': ['STB']},
                                    ['STB', 'SM'], training_error=False)

    assert len(warnings) == 2
    assert "split 'train' has no ROI of class 'STB'" in warnings[0]
    assert 'cannot learn' in warnings[0]
    assert "split 'val' has no ROI of class 'SM'" in warnings[1]


def test_coverage_complete_splits():
    assert check_class_coverage({'train': ['STB', 'SM'],
                                 'fold0_val': ['SM', 'STB']},
                                ['STB', 'SM']) == []


# Through prepare_cohort and the command-line tool.


def write_png_cohort(root: Path, patients: Sequence[Sequence[str]],
                     rois: Sequence[Sequence[str]]) -> Path:
    """Write the tables plus a PNG slice and a Labelme file per roi_id."""
    for roi_id in {row[0] for row in rois}:
        array = np.clip(disc_phantom(64, 64, value=150.0), 0, 255)
        (root / 'images').mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(array.astype(np.uint8)).save(
            root / 'images' / f'{roi_id}.png')
        write_labelme(root / 'ann' / f'{roi_id}.json',
                      [rectangle(18, 16, 40, 36)], 64, 64,
                      image_path=f'../images/{roi_id}.png')
    return write_tables(root, patients, rois)


@pytest.fixture
def cohort_with_bad_rows(tmp_path):
    """Ten good patients and four bad rows.

    Site A has four STB and four SM patients, site B two SM patients.
    patients.csv gives p8 two diagnoses (lines 12, 13) and p9 two sites
    (lines 14, 15). rois.csv names an unknown patient (line 14) and
    repeats the row of r1 (line 15).
    """
    patients = [(f'p{k}', 'A', 'STB' if k % 2 else 'SM') for k in range(8)]
    patients += [('p10', 'B', 'SM'), ('p11', 'B', 'SM'),
                 ('p8', 'A', 'STB'), ('p8', 'A', 'SM'),
                 ('p9', 'A', 'SM'), ('p9', 'B', 'SM')]
    rois = [roi(f'r{k}', f'p{k}') for k in (0, 1, 2, 3, 4, 5, 6, 7, 10, 11,
                                            8, 9)]
    rois += [roi('r12', 'p77'), roi('r1', 'p1')]
    return write_png_cohort(tmp_path / 'cohort', patients, rois)


def test_prepare_lists_bad_rows(cohort_with_bad_rows, tmp_path):
    out_dir = tmp_path / 'out'

    manifest = prepare_cohort(cohort_with_bad_rows, out_dir, FAST,
                              external_sites=['B'], val_fraction=0.34,
                              n_folds=0, workers=1, progress=False)

    prepared = {record['roi_id'] for record in manifest['rois']}
    assert prepared == {f'r{k}' for k in (0, 1, 2, 3, 4, 5, 6, 7, 10, 11)}
    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['n_rois'] == 14
    assert quality['n_skipped'] == 4
    rows = {(p['table'], p['line']): p for p in quality['table_problems']}
    assert set(rows) == {('patients.csv', 13), ('patients.csv', 15),
                         ('rois.csv', 14), ('rois.csv', 15)}
    assert rows['patients.csv', 13]['roi_ids'] == ['r8']
    assert rows['patients.csv', 15]['roi_ids'] == ['r9']
    assert rows['rois.csv', 14]['value'] == 'p77'
    assert rows['rois.csv', 15]['action'] == 'ignored'
    report = (out_dir / 'quality.md').read_text()
    assert '## Table rows' in report
    assert '| rois.csv | 14 | patient_id | p77 | skipped ROIs r12 |' in report
    assert '| patients.csv | 15 | site | B | skipped patients p9; ROIs r9 |' \
        in report


def test_cli_strict_stops_at_first_row(cohort_with_bad_rows, tmp_path,
                                       capsys):
    tool = load_prepare_data_tool()

    code = tool.main([str(cohort_with_bad_rows), str(tmp_path / 'out'),
                      '--external-sites', 'B', '--folds', '0', '--no-n4',
                      '--no-progress', '--strict'])

    assert code == 1
    error = capsys.readouterr().err
    assert 'patients.csv, line 13' in error
    assert "patient_id 'p8' appears twice with different diagnoses" in error
    assert not (tmp_path / 'out' / 'manifest.json').exists()


def test_cli_reports_rows_and_empty_class(cohort_with_bad_rows, tmp_path,
                                          capsys):
    # Only SM patients at site B: the external split has no STB.
    tool = load_prepare_data_tool()

    code = tool.main([str(cohort_with_bad_rows), str(tmp_path / 'out'),
                      '--external-sites', 'B', '--folds', '0',
                      '--val-fraction', '0.34', '--no-n4', '--no-progress',
                      '--workers', '1'])

    assert code == 0
    output = capsys.readouterr().out
    assert 'Skipped 3 invalid row(s) of patients.csv and rois.csv' in output
    assert "Warning: split 'external' has no ROI of class 'STB'" in output
    quality = json.loads((tmp_path / 'out' / 'quality.json').read_text())
    assert quality['split_warnings'][0].startswith("split 'external'")
    external = json.loads(
        (tmp_path / 'out' / 'annotations' / 'external.json').read_text())
    assert {s['label'] for s in external['data_list']} == {'SM'}


@pytest.fixture
def cohort_without_training_sm(tmp_path):
    """Every SM patient is at the external site B."""
    patients = [(f'p{k}', 'A' if k % 2 else 'B', 'STB' if k % 2 else 'SM')
                for k in range(6)]
    rois = [roi(f'r{k}', f'p{k}') for k in range(6)]
    return write_png_cohort(tmp_path / 'cohort', patients, rois)


def test_prepare_training_without_class_warns(cohort_without_training_sm,
                                              tmp_path):
    out_dir = tmp_path / 'out'

    prepare_cohort(cohort_without_training_sm, out_dir, FAST,
                   external_sites=['B'], val_fraction=0.34, n_folds=0,
                   workers=1, progress=False)

    quality = json.loads((out_dir / 'quality.json').read_text())
    assert any("split 'train' has no ROI of class 'SM'" in warning
               and 'cannot learn' in warning
               for warning in quality['split_warnings'])
    assert (out_dir / 'annotations' / 'train.json').is_file()


def test_prepare_training_without_class_strict(cohort_without_training_sm,
                                               tmp_path):
    out_dir = tmp_path / 'out'

    with pytest.raises(CohortError) as error:
        prepare_cohort(cohort_without_training_sm, out_dir, FAST,
                       external_sites=['B'], val_fraction=0.34, n_folds=0,
                       workers=1, progress=False, strict=True)

    assert "split 'train' has no ROI of class 'SM'" in str(error.value)
    assert not (out_dir / 'manifest.json').exists()
    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['split_warnings'] == [str(error.value)]
    assert "split 'train'" in (out_dir / 'quality.md').read_text()


def test_prepare_all_rows_invalid(tmp_path):
    root = write_tables(tmp_path / 'cohort', [('p1', 'A', 'STB')],
                        [roi('r1', 'p7'), roi('r2', 'p8')])
    out_dir = tmp_path / 'out'

    with pytest.raises(CohortError, match='no row of rois.csv can be used'):
        prepare_cohort(root, out_dir, FAST, n_folds=0, progress=False)

    quality = json.loads((out_dir / 'quality.json').read_text())
    assert quality['n_rois'] == 2
    assert quality['n_prepared'] == 0
    assert len(quality['table_problems']) == 2
