"""Tests of the synthetic STB/SM cohort generator and its command line tool."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from labelme import LabelFile
from labelme.utils import shape_to_mask

from stbsm_mm.cohort.synthetic import (PLACEHOLDER_IDENTIFIERS,
                                       generate_synthetic_cohort,
                                       placeholder_identifiers)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(patients_per_site=2, sites=('Site A', 'Site B'),
             image_size=(128, 128), seed=0)
PATIENT_COLUMNS = ['patient_id', 'site', 'diagnosis', 'age', 'sex']
ROI_COLUMNS = ['roi_id', 'patient_id', 'image', 'dicom', 'annotation',
               'slice_index', 'label']


@pytest.fixture(scope='module')
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp('cohort') / 'synthetic'
    return generate_synthetic_cohort(out_dir, **SMALL)


@pytest.fixture(scope='module')
def multi_roi_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Three ROIs per patient and at most two per slice: every patient has
    # several slices, and most have a slice with two ROIs.
    out_dir = tmp_path_factory.mktemp('multi') / 'synthetic'
    return generate_synthetic_cohort(out_dir, patients_per_site=2,
                                     sites=('A', 'B', 'C'),
                                     rois_per_patient=(3, 3),
                                     image_size=(64, 64), seed=3)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline='', encoding='utf-8') as file:
        return list(csv.DictReader(file))


def read_header(path: Path) -> list[str]:
    with path.open(newline='', encoding='utf-8') as file:
        return next(csv.reader(file))


def read_pixels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def slice_id_of(row: dict[str, str]) -> str:
    return Path(row['image']).name[:-len('.nii.gz')]


def diagnoses(cohort: Path) -> dict[str, str]:
    return {row['patient_id']: row['diagnosis']
            for row in read_rows(cohort / 'patients.csv')}


def anatomy_masks(cohort: Path, slice_id: str, prefix: str,
                  size: tuple[int, int]) -> list[np.ndarray]:
    anatomy = json.loads(
        (cohort / 'annotations' / 'anatomy' / f'{slice_id}.json').read_text())
    return [shape_to_mask(size, shape['points'], shape['shape_type'])
            for shape in anatomy['shapes']
            if shape['label'].startswith(prefix)]


def test_patients_csv_columns_and_ids(cohort: Path) -> None:
    assert read_header(cohort / 'patients.csv') == PATIENT_COLUMNS
    patients = read_rows(cohort / 'patients.csv')
    ids = [row['patient_id'] for row in patients]
    assert len(ids) == 4
    assert len(set(ids)) == len(ids)
    for patient_id in ids:
        assert re.fullmatch(r'P\d{3}', patient_id)
    for site in SMALL['sites']:
        site_diagnoses = [row['diagnosis'] for row in patients
                          if row['site'] == site]
        assert sorted(site_diagnoses) == ['SM', 'STB']
    for row in patients:
        assert 18 <= int(row['age']) <= 70
        assert row['sex'] in {'M', 'F'}


def test_rois_csv_columns_and_paths(cohort: Path) -> None:
    assert read_header(cohort / 'rois.csv') == ROI_COLUMNS
    rois = read_rows(cohort / 'rois.csv')
    patient_ids = set(diagnoses(cohort))
    assert len({row['roi_id'] for row in rois}) == len(rois)
    assert {row['patient_id'] for row in rois} == patient_ids
    for row in rois:
        slice_id = slice_id_of(row)
        assert row['image'] == f'images/{slice_id}.nii.gz'
        assert row['dicom'] == f'dicom/{slice_id}'
        assert row['annotation'] == f'annotations/{row["roi_id"]}.json'
        assert row['slice_index'] == ''
        assert row['label'] == ''


def test_rois_csv_paths_exist(cohort: Path) -> None:
    for row in read_rows(cohort / 'rois.csv'):
        slice_id = slice_id_of(row)
        assert (cohort / row['image']).is_file()
        assert (cohort / row['dicom']).is_dir()
        assert (cohort / row['dicom'] / 'IM0001.dcm').is_file()
        assert (cohort / row['annotation']).is_file()
        assert (cohort / 'images_png' / f'{slice_id}.png').is_file()
        assert (cohort / 'annotations' / 'anatomy'
                / f'{slice_id}.json').is_file()


def test_rois_shared_and_separate_slices(multi_roi_cohort: Path) -> None:
    rois = read_rows(multi_roi_cohort / 'rois.csv')
    rois_per_slice: dict[str, int] = {}
    slices_per_patient: dict[str, set[str]] = {}
    for row in rois:
        rois_per_slice[row['image']] = rois_per_slice.get(row['image'], 0) + 1
        slices_per_patient.setdefault(row['patient_id'], set()).add(
            row['image'])
    assert len(rois) == 3 * 6
    assert max(rois_per_slice.values()) == 2
    assert all(len(images) >= 2 for images in slices_per_patient.values())
    shared = [row for row in rois if rois_per_slice[row['image']] == 2]
    assert len({row['annotation'] for row in shared}) == len(shared)


def test_same_seed_same_files(cohort: Path, tmp_path: Path) -> None:
    again = generate_synthetic_cohort(tmp_path / 'again', **SMALL)
    for name in ('patients.csv', 'rois.csv'):
        assert (again / name).read_bytes() == (cohort / name).read_bytes()
    for row in read_rows(cohort / 'rois.csv'):
        slice_id = slice_id_of(row)
        np.testing.assert_array_equal(read_pixels(again / row['image']),
                                      read_pixels(cohort / row['image']))
        png = f'images_png/{slice_id}.png'
        np.testing.assert_array_equal(cv2.imread(str(again / png), -1),
                                      cv2.imread(str(cohort / png), -1))
        first = pydicom.dcmread(cohort / row['dicom'] / 'IM0001.dcm')
        second = pydicom.dcmread(again / row['dicom'] / 'IM0001.dcm')
        np.testing.assert_array_equal(first.pixel_array, second.pixel_array)
        assert first.SOPInstanceUID == second.SOPInstanceUID
        assert first.SeriesInstanceUID == second.SeriesInstanceUID
        assert ((again / row['annotation']).read_bytes()
                == (cohort / row['annotation']).read_bytes())


def test_other_seed_other_pixels(cohort: Path, tmp_path: Path) -> None:
    other = generate_synthetic_cohort(tmp_path / 'other',
                                      **{**SMALL, 'seed': 1})
    first = read_pixels(cohort / 'images' / 'P001_s1.nii.gz')
    second = read_pixels(other / 'images' / 'P001_s1.nii.gz')
    assert not np.array_equal(first, second)


def test_labelme_rois_match_slices(cohort: Path) -> None:
    shape_types = set()
    for row in read_rows(cohort / 'rois.csv'):
        path = cohort / row['annotation']
        LabelFile(str(path))  # loads the PNG and checks its size
        payload = json.loads(path.read_text())
        height, width = read_pixels(cohort / row['image']).shape
        assert payload['version'].startswith('5.')
        assert payload['imageData'] is None
        assert (payload['imageHeight'], payload['imageWidth']) == (height,
                                                                   width)
        image_path = (path.parent / payload['imagePath']).resolve()
        assert image_path == (cohort / 'images_png'
                              / f'{slice_id_of(row)}.png').resolve()
        assert payload['shapes']
        for shape in payload['shapes']:
            assert shape['label'] == 'lesion'
            assert shape['mask'] is None
            assert set(shape) >= {'label', 'points', 'group_id',
                                  'description', 'shape_type', 'flags'}
            points = np.asarray(shape['points'])
            assert points.min() >= 0.0
            assert points[:, 0].max() <= width - 1
            assert points[:, 1].max() <= height - 1
            shape_types.add(shape['shape_type'])
    assert shape_types == {'polygon', 'rectangle', 'circle'}


def test_labelme_anatomy_loads(cohort: Path) -> None:
    for path in sorted((cohort / 'annotations' / 'anatomy').glob('*.json')):
        LabelFile(str(path))
        labels = [shape['label'] for shape in
                  json.loads(path.read_text())['shapes']]
        assert 'vertebra_1' in labels
        assert 'disc_1' in labels
        assert 'spinal_canal' in labels


def test_image_copies_hold_same_pixels(cohort: Path) -> None:
    for row in read_rows(cohort / 'rois.csv'):
        nifti = sitk.ReadImage(str(cohort / row['image']))
        dicom = sitk.ReadImage(str(cohort / row['dicom'] / 'IM0001.dcm'))
        pixels = sitk.GetArrayFromImage(nifti)
        assert nifti.GetDimension() == 2
        assert pixels.dtype == np.uint16
        assert nifti.GetDirection() == (1.0, 0.0, 0.0, 1.0)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(dicom)[0],
                                      pixels)
        np.testing.assert_allclose(dicom.GetSpacing()[:2],
                                   nifti.GetSpacing(), atol=1e-4)

        png = cv2.imread(
            str(cohort / 'images_png' / f'{slice_id_of(row)}.png'), -1)
        low, high = float(pixels.min()), float(pixels.max())
        expected = np.rint((pixels - low) * 255.0 / (high - low))
        assert png.dtype == np.uint8
        assert np.abs(png.astype(float) - expected).max() <= 1.0


def test_dicom_header_fields(cohort: Path) -> None:
    for row in read_rows(cohort / 'rois.csv'):
        ds = pydicom.dcmread(cohort / row['dicom'] / 'IM0001.dcm')
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.Modality == 'MR'
        assert ds.PhotometricInterpretation == 'MONOCHROME2'
        assert ds.BitsAllocated == 16
        assert ds.InstanceNumber == 1
        assert 'T2' in ds.SeriesDescription
        assert [float(x) for x in ds.ImageOrientationPatient] == [
            0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        assert len(ds.ImagePositionPatient) == 3
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                    ds.SOPInstanceUID):
            assert uid.is_valid


def test_sites_differ_in_spacing(cohort: Path) -> None:
    site_of = {row['patient_id']: row['site']
               for row in read_rows(cohort / 'patients.csv')}
    spacings: dict[str, set[tuple[float, float]]] = {}
    for row in read_rows(cohort / 'rois.csv'):
        spacing = sitk.ReadImage(str(cohort / row['image'])).GetSpacing()
        spacings.setdefault(site_of[row['patient_id']], set()).add(
            tuple(round(s, 4) for s in spacing))
    for site_spacings in spacings.values():
        assert len(site_spacings) == 1
        for spacing in site_spacings:
            assert all(0.5 <= s <= 0.9 for s in spacing)
    (square,), (external,) = spacings['Site A'], spacings['Site B']
    assert square[0] == square[1]
    assert external[0] != external[1]


def test_stb_rois_cover_a_disc(cohort: Path) -> None:
    diagnosis_of = diagnoses(cohort)
    checked = 0
    for row in read_rows(cohort / 'rois.csv'):
        if diagnosis_of[row['patient_id']] != 'STB':
            continue
        size = read_pixels(cohort / row['image']).shape
        main = json.loads((cohort / row['annotation']).read_text())['shapes'][0]
        roi = shape_to_mask(size, main['points'], main['shape_type'])
        discs = anatomy_masks(cohort, slice_id_of(row), 'disc_', size)
        covered = max((roi & disc).sum() / disc.sum() for disc in discs)
        assert covered >= 0.5, row['roi_id']
        checked += 1
    assert checked >= 2


def test_sm_rois_spare_discs(cohort: Path) -> None:
    diagnosis_of = diagnoses(cohort)
    checked = 0
    for row in read_rows(cohort / 'rois.csv'):
        if diagnosis_of[row['patient_id']] != 'SM':
            continue
        size = read_pixels(cohort / row['image']).shape
        discs = anatomy_masks(cohort, slice_id_of(row), 'disc_', size)
        pedicles = anatomy_masks(cohort, slice_id_of(row), 'pedicle_', size)
        shapes = json.loads((cohort / row['annotation']).read_text())['shapes']
        for shape in shapes:
            if shape['shape_type'] != 'polygon':
                continue  # a box or circle around the lesion may reach a disc
            roi = shape_to_mask(size, shape['points'], 'polygon')
            for disc in discs:
                assert not (roi & disc).any(), row['roi_id']
            checked += 1
        main = shapes[0]
        if main['shape_type'] == 'polygon':
            roi = shape_to_mask(size, main['points'], 'polygon')
            assert any((roi & pedicle).any() for pedicle in pedicles)
    assert checked >= 1


def test_placeholders_only_in_dicom(cohort: Path) -> None:
    for row in read_rows(cohort / 'rois.csv'):
        path = cohort / row['dicom'] / 'IM0001.dcm'
        ds = pydicom.dcmread(path)
        raw = path.read_bytes()
        for keyword, value in placeholder_identifiers(
                row['patient_id']).items():
            assert str(ds.data_element(keyword).value) == value
            assert any(fixed in value for fixed in PLACEHOLDER_IDENTIFIERS)
            assert value.encode() in raw
    for path in cohort.rglob('*'):
        if path.suffix in {'.csv', '.json', '.md'}:
            text = path.read_text(encoding='utf-8')
            for fixed in PLACEHOLDER_IDENTIFIERS:
                assert fixed not in text, (path, fixed)


def test_placeholder_identifiers_rejects_empty() -> None:
    with pytest.raises(ValueError, match='patient_id'):
        placeholder_identifiers('')


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_synthetic_cohort(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ['notes.txt']
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


def test_overwrite_keeps_foreign_files(tmp_path: Path) -> None:
    generate_synthetic_cohort(tmp_path, **SMALL)
    first_images = {p.name for p in (tmp_path / 'images').iterdir()}
    (tmp_path / 'notes.txt').write_text('mine')
    (tmp_path / 'images' / 'mine.txt').write_text('mine')

    generate_synthetic_cohort(tmp_path, **{**SMALL, 'sites': ('Site A',)},
                              overwrite=True)

    second_images = {p.name for p in (tmp_path / 'images').iterdir()}
    second_rows = read_rows(tmp_path / 'rois.csv')
    assert (tmp_path / 'notes.txt').read_text() == 'mine'
    assert (tmp_path / 'images' / 'mine.txt').read_text() == 'mine'
    assert second_images == {Path(row['image']).name
                             for row in second_rows} | {'mine.txt'}
    assert first_images - second_images  # the old site's slices are gone
    for folder in (tmp_path / 'dicom').iterdir():
        assert any(folder.iterdir()), folder


@pytest.mark.parametrize('option, value, error, name', [
    ('patients_per_site', 1, ValueError, 'patients_per_site'),
    ('sites', 'Site A', TypeError, 'sites'),
    ('sites', ('A', 'A'), ValueError, 'sites'),
    ('rois_per_patient', (3, 1), ValueError, 'rois_per_patient'),
    ('image_size', (32, 128), ValueError, 'image_size'),
    ('seed', -1, ValueError, 'seed'),
    ('classes', ('STB', 'STB'), ValueError, 'classes'),
    ('external_site', 'Nowhere', ValueError, 'external_site'),
])
def test_invalid_option_raises(tmp_path: Path, option: str, value: object,
                               error: type, name: str) -> None:
    out_dir = tmp_path / 'never'
    with pytest.raises(error, match=name):
        generate_synthetic_cohort(out_dir, **{**SMALL, option: value})
    assert not out_dir.exists()


def load_tool():
    path = REPO_ROOT / 'tools' / 'make_synthetic_cohort.py'
    spec = importlib.util.spec_from_file_location('make_synthetic_cohort',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_then_refuses(tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    tool = load_tool()
    argv = [str(tmp_path / 'out'), '--patients-per-site', '2', '--sites',
            'North', 'South', '--size', '96', '112', '--seed', '7',
            '--external-site', 'North']
    assert tool.main(argv) == 0
    patients = read_rows(tmp_path / 'out' / 'patients.csv')
    assert {row['site'] for row in patients} == {'North', 'South'}
    image = read_rows(tmp_path / 'out' / 'rois.csv')[0]['image']
    assert read_pixels(tmp_path / 'out' / image).shape == (96, 112)

    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code == 2
    assert '--overwrite' in capsys.readouterr().err
    assert tool.main([*argv, '--overwrite']) == 0


def test_cli_help_names_units(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_tool().main(['--help'])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert 'pixels' in help_text
    assert '--external-site' in help_text
