"""Tests of the cohort tables and the patient-level splits."""
from pathlib import Path
from typing import Optional, Sequence

import pytest

from helpers import write_table
from stbsm_mm.classes import DEFAULT_CLASSES
from stbsm_mm.cohort import (EXTERNAL, TRAIN, VAL, CohortError,
                             LeakageError, check_disjoint, load_cohort,
                             resolve_classes, split_patients)

PATIENT_HEADER = ('patient_id', 'site', 'diagnosis')
ROI_HEADER = ('roi_id', 'patient_id', 'annotation', 'image', 'label',
              'slice_index')
PHILIPS = {'100', '169', '244', '36'}


def write_cohort(root: Path,
                 patients: Sequence[Sequence[str]],
                 rois: Sequence[Sequence[str]],
                 patient_header: Sequence[str] = PATIENT_HEADER,
                 roi_header: Sequence[str] = ROI_HEADER) -> Path:
    """Write patients.csv and rois.csv. The tables need no image files."""
    write_table(root / 'patients.csv', patient_header, patients)
    write_table(root / 'rois.csv', roi_header, rois)
    return root


def roi(roi_id: str, patient_id: str, label: str = '',
        slice_index: str = '') -> tuple:
    return (roi_id, patient_id, f'ann/{roi_id}.json', f'img/{roi_id}.png',
            label, slice_index)


def load_error(root: Path, classes: Optional[Sequence[str]] = None) -> str:
    with pytest.raises(CohortError) as error:
        load_cohort(root, classes)
    return str(error.value)


# The demo cohort.


def test_demo_cohort_loads(demo_cohort):
    cohort = load_cohort(demo_cohort)

    assert cohort.classes == ('modic', 'no_modic')
    assert len(cohort.patients) == 13
    assert len(cohort.rois) == 92
    assert sum(roi.label == 'modic' for roi in cohort.rois) == 39
    assert {pid for pid, patient in cohort.patients.items()
            if patient.site == 'Philips Ingenia'} == PHILIPS


def test_demo_cohort_paths_resolved(demo_cohort):
    cohort = load_cohort(demo_cohort)

    first = cohort.rois[0]
    assert first.annotation.is_file()
    assert first.image.is_file()
    assert first.dicom.is_dir()


# Table checks.


def test_load_minimal_cohort(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', 'SM')],
                        [roi('r1', 'p1'), roi('r2', 'p2', slice_index='3')])

    cohort = load_cohort(root)

    assert list(cohort.patients) == ['p1', 'p2']
    assert [r.label for r in cohort.rois] == ['STB', 'SM']
    assert cohort.rois[0].annotation == root / 'ann' / 'r1.json'
    assert cohort.rois[0].slice_index is None
    assert cohort.rois[1].slice_index == 3


def test_load_missing_patient_column(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A')], [roi('r1', 'p1', 'STB')],
                        patient_header=('patient_id', 'hospital'))

    message = load_error(root)

    assert "missing column(s) ['site']" in message
    assert "found ['patient_id', 'hospital']" in message


def test_load_missing_roi_column(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')], [('r1', 'p1')],
                        roi_header=('roi_id', 'patient_id'))

    message = load_error(root)

    assert "missing column(s) ['annotation']" in message
    assert "found ['roi_id', 'patient_id']" in message


def test_load_missing_table(tmp_path):
    write_table(tmp_path / 'patients.csv', PATIENT_HEADER, [('p1', 'A', '')])

    assert 'rois.csv: not found' in load_error(tmp_path)


def test_load_duplicate_patient(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB'), ('p1', 'A', 'STB')],
                        [roi('r1', 'p1')])

    message = load_error(root)

    assert "patient_id 'p1' appears twice" in message
    assert 'line 3' in message


def test_load_patient_in_two_sites(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'Dev', 'STB'), ('p2', 'Dev', 'SM'),
                                   ('p1', 'External', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p2')])

    assert "patient_id 'p1' appears twice" in load_error(root)


def test_load_duplicate_roi(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r1', 'p1')])

    assert "roi_id 'r1' appears twice" in load_error(root)


def test_load_unknown_patient(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p9')])

    message = load_error(root)

    assert "patient_id 'p9' of ROI 'r2' is not in patients.csv" in message


def test_load_roi_without_label(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', '')],
                        [roi('r1', 'p1'), roi('r2', 'p2')])

    message = load_error(root)

    assert "ROI 'r2' has no label" in message
    assert "patient 'p2' has no diagnosis" in message


def test_load_roi_label_overrides_diagnosis(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', '')],
                        [roi('r1', 'p1', 'SM'), roi('r2', 'p2', 'STB')])

    cohort = load_cohort(root)

    assert [r.label for r in cohort.rois] == ['SM', 'STB']


def test_load_label_not_in_classes(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', 'TB')],
                        [roi('r1', 'p1'), roi('r2', 'p2')])

    message = load_error(root, classes=['STB', 'SM'])

    assert "diagnosis 'TB' of patient 'p2' is not among the classes " \
        "['STB', 'SM']" in message
    assert 'patients.csv, line 3' in message


def test_load_ids_are_strings(tmp_path):
    root = write_cohort(tmp_path, [('007', 'A', 'STB'), ('7', 'A', 'SM')],
                        [roi('r1', '007'), roi('r2', '7')])

    cohort = load_cohort(root)

    assert set(cohort.patients) == {'007', '7'}
    assert [r.patient_id for r in cohort.rois] == ['007', '7']
    assert [r.label for r in cohort.rois] == ['STB', 'SM']


def test_load_id_007_is_not_7(tmp_path):
    root = write_cohort(tmp_path, [('007', 'A', 'STB')], [roi('r1', '7')])

    assert "patient_id '7' of ROI 'r1' is not in patients.csv" in load_error(
        root)


def test_load_stb_sm_default_order(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'SM'), ('p2', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p2')])

    assert load_cohort(root).classes == DEFAULT_CLASSES == ('STB', 'SM')


def test_load_given_classes_order(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'SM'), ('p2', 'A', 'STB')],
                        [roi('r1', 'p1'), roi('r2', 'p2')])

    assert load_cohort(root, classes=['SM', 'STB']).classes == ('SM', 'STB')


@pytest.mark.parametrize('value, expected', [('2', 2), ('2.0', 2), (' 4 ', 4),
                                             ('', None)])
def test_load_slice_index_values(tmp_path, value, expected):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1', slice_index=value)])

    assert load_cohort(root).rois[0].slice_index == expected


@pytest.mark.parametrize('value', ['two', '1.5', 'nan'])
def test_load_slice_index_invalid(tmp_path, value):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')],
                        [roi('r1', 'p1', slice_index=value)])

    assert f"slice_index={value!r} is not an integer" in load_error(root)


def test_load_row_with_extra_field(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')], [roi('r1', 'p1')])
    with open(root / 'rois.csv', 'a', encoding='utf-8') as file:
        file.write('r2,p1,ann/r2.json,img/r2.png,,,\n')

    message = load_error(root)

    assert 'line 3' in message
    assert '7 fields' in message


def test_load_windows_image_path(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB')],
                        [('r1', 'p1', 'ann/r1.json', 'img\\sub\\r1.png', '',
                          '')])

    assert load_cohort(root).rois[0].image == root / 'img' / 'sub' / 'r1.png'


def test_patient_label_from_rois(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', ''), ('p2', 'A', '')], [
        roi('r1', 'p1', 'SM'), roi('r2', 'p1', 'STB'), roi('r3', 'p1', 'SM'),
        roi('r4', 'p2', 'SM'), roi('r5', 'p2', 'STB')
    ])

    cohort = load_cohort(root)

    assert cohort.patient_label('p1') == 'SM'
    # A tie goes to the class listed first.
    assert cohort.patient_label('p2') == 'STB'


# Class names.


def test_resolve_classes_default():
    assert resolve_classes(['SM', 'STB', 'SM']) == ('STB', 'SM')
    assert resolve_classes(['SM']) == ('STB', 'SM')


def test_resolve_classes_sorted_labels():
    assert resolve_classes(['no_modic', 'modic']) == ('modic', 'no_modic')


@pytest.mark.parametrize('classes', [['STB'], ['STB', 'STB']])
def test_resolve_classes_invalid(classes):
    with pytest.raises(CohortError, match='two or more distinct'):
        resolve_classes(['STB'], classes)


# Splits on the demo cohort.


@pytest.fixture(scope='module')
def demo(demo_cohort):
    """The demo cohort's tables; ``demo_cohort`` is its folder."""
    return load_cohort(demo_cohort)


def development_patients(cohort) -> set:
    return {pid for pid, patient in cohort.patients.items()
            if patient.site != 'Philips Ingenia'}


def test_split_external_site(demo):
    split = split_patients(demo, ['Philips Ingenia'], seed=0)

    assert split.patients_in(EXTERNAL) == PHILIPS
    for patient_id in PHILIPS:
        assert split.fold[patient_id] is None


def test_split_disjoint_and_complete(demo):
    split = split_patients(demo, ['Philips Ingenia'], seed=0)

    train, val = split.patients_in(TRAIN), split.patients_in(VAL)
    external = split.patients_in(EXTERNAL)
    assert not train & val
    assert not train & external
    assert not val & external
    assert train | val == development_patients(demo)
    assert train | val | external == set(demo.patients)
    # 20% of 9 development patients, in whole patients.
    assert 1 <= len(val) <= 3


def test_split_folds(demo):
    split = split_patients(demo, ['Philips Ingenia'], n_folds=5,
                           seed=0)

    development = development_patients(demo)
    for patient_id in development:
        assert split.fold[patient_id] in range(5), patient_id
    for fold in range(5):
        assert split.fold_patients(fold), f'fold {fold} is empty'
    assert set().union(*(split.fold_patients(k) for k in range(5))) == \
        development


def test_split_same_seed_same_split(demo):
    first = split_patients(demo, ['Philips Ingenia'], seed=3)
    second = split_patients(demo, ['Philips Ingenia'], seed=3)

    assert first.split == second.split
    assert first.fold == second.fold


def test_split_seed_changes_split(demo):
    base = split_patients(demo, ['Philips Ingenia'], seed=0)

    # Only patients with alike label distributions are shuffled, so many
    # seeds give the same split. One of the first 50 must differ.
    changed = [
        seed for seed in range(1, 50)
        if split_patients(demo, ['Philips Ingenia'],
                          seed=seed).fold != base.fold
    ]
    assert changed


def test_split_unknown_external_site(demo):
    with pytest.raises(CohortError) as error:
        split_patients(demo, ['Philips Achieva'])
    message = str(error.value)
    assert "['Philips Achieva'] are not in patients.csv" in message
    assert 'Philips Ingenia' in message
    assert 'Siemens Aera' in message


def test_split_invalid_val_fraction(demo):
    with pytest.raises(CohortError, match='val_fraction=1.5'):
        split_patients(demo, val_fraction=1.5)


def test_split_too_few_patients(tmp_path):
    root = write_cohort(tmp_path, [('p1', 'A', 'STB'), ('p2', 'A', 'SM'),
                                   ('p3', 'A', 'SM')],
                        [roi('r1', 'p1'), roi('r2', 'p2'), roi('r3', 'p3')])

    with pytest.raises(CohortError, match='3 development patients'):
        split_patients(load_cohort(root), val_fraction=0.2, n_folds=2)


def test_split_keeps_patient_rois_together(tmp_path):
    patients = [(f'p{k}', 'A', 'STB' if k % 2 else 'SM') for k in range(8)]
    rois = [roi(f'r{k}_{j}', f'p{k}') for k in range(8) for j in range(3)]
    cohort = load_cohort(write_cohort(tmp_path, patients, rois))

    split = split_patients(cohort, val_fraction=0.25, n_folds=4, seed=1)

    assert set(split.split) == {f'p{k}' for k in range(8)}
    assert {split.split[pid] for pid in split.split} == {TRAIN, VAL}
    # Stratified: validation contains both classes.
    assert {cohort.patient_label(pid) for pid in split.patients_in(VAL)} == \
        {'STB', 'SM'}
    for fold in range(4):
        assert len(split.fold_patients(fold)) == 2


# Leakage check.


def test_check_disjoint_passes():
    check_disjoint({'train': ['1', '2'], 'val': ['3'], 'external': []})


def test_check_disjoint_names_patient():
    with pytest.raises(LeakageError) as error:
        check_disjoint({'train': ['1', '042'], 'val': ['3'],
                        'external': ['042']})
    message = str(error.value)
    assert 'patient 042' in message
    assert 'train' in message
    assert 'external' in message
