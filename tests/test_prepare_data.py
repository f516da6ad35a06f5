"""End-to-end tests of prepare_cohort and tools/prepare_data.py.

A small two-site phantom cohort (see ``helpers.write_phantom_cohort``) is
prepared once per module by the command-line tool. Tests that change inputs
write and prepare a fresh cohort of their own.
"""
import csv
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import (PHI_STRINGS, load_prepare_data_tool, rectangle,
                     textured_phantom, write_image, write_labelme,
                     write_phantom_cohort)
from stbsm_mm.cohort import LeakageError
from stbsm_mm.datasets import T2CropDataset
from stbsm_mm.io import SliceReadError, lesion_box, load_labelme, read_slice
from stbsm_mm.preprocessing import (PreprocessConfig, correct_bias_field,
                                    crop_lesion, normalize_intensity,
                                    prepare_cohort)
from stbsm_mm.utils import sha256_of_file

CONFIG = PreprocessConfig(n4_iterations=(10, 10), margin=0.1)
SPLIT_ARGS = dict(external_sites=['Site B'], val_fraction=0.5, n_folds=2,
                  seed=0, workers=1, progress=False)
CLI_ARGS = ['--external-sites', 'Site B', '--val-fraction', '0.5',
            '--folds', '2', '--n4-iterations', '10', '10', '--margin', '0.1',
            '--no-progress']
ROI_IDS = ('p1_a', 'p1_b', 'p2_a', 'p3_a', 'p3_b', 'p4_a', 'p5_a')


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding='utf-8'))


def crop_identities(out_dir: Path) -> Dict[str, Tuple[int, int]]:
    """Map each crop file to its inode and mtime, which change on rewrite."""
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted((out_dir / 'crops').glob('*.png'))
    }


def crop_bytes(out_dir: Path) -> Dict[str, bytes]:
    return {path.name: path.read_bytes()
            for path in sorted((out_dir / 'crops').glob('*.png'))}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """The phantom cohort and its prepared folder, written by the CLI."""
    root = tmp_path_factory.mktemp('prepared')
    cohort_dir, out_dir = root / 'cohort', root / 'out'
    slices = write_phantom_cohort(cohort_dir)
    tool = load_prepare_data_tool()

    assert tool.main([str(cohort_dir), str(out_dir), '--workers', '2'] +
                     CLI_ARGS) == 0
    return cohort_dir, out_dir, slices


@pytest.fixture
def editable(tmp_path):
    """A fresh phantom cohort prepared in-process, safe to modify."""
    cohort_dir, out_dir = tmp_path / 'cohort', tmp_path / 'out'
    slices = write_phantom_cohort(cohort_dir)
    prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)
    return cohort_dir, out_dir, slices


# Files written.


def test_prepare_writes_layout(prepared):
    _, out_dir, _ = prepared

    for name in ('all', 'train', 'val', 'external', 'fold0_train',
                 'fold0_val', 'fold1_train', 'fold1_val'):
        assert (out_dir / 'annotations' / f'{name}.json').is_file(), name
    assert (out_dir / 'splits' / 'patients.csv').is_file()
    assert (out_dir / 'manifest.json').is_file()
    assert sorted(path.stem for path in (out_dir / 'crops').iterdir()) == \
        sorted(ROI_IDS)


def test_prepare_annotation_files(prepared):
    _, out_dir, _ = prepared
    annotations = {
        name: read_json(out_dir / 'annotations' / f'{name}.json')
        for name in ('all', 'train', 'val', 'external')
    }

    samples = annotations['all']['data_list']
    assert sorted(s['roi_id'] for s in samples) == sorted(ROI_IDS)
    for name, content in annotations.items():
        assert content['metainfo']['classes'] == ['STB', 'SM'], name
    for sample in samples:
        assert (out_dir / sample['img_path']).is_file()
        assert sample['gt_label'] == ['STB', 'SM'].index(sample['label'])
    assert {s['patient_id'] for s in annotations['external']['data_list']} \
        == {'p5'}
    patients = {
        name: {s['patient_id'] for s in annotations[name]['data_list']}
        for name in ('train', 'val', 'external')
    }
    assert not patients['train'] & patients['val']
    assert patients['train'] | patients['val'] == {'p1', 'p2', 'p3', 'p4'}
    assert sum(len(annotations[name]['data_list'])
               for name in ('train', 'val', 'external')) == len(ROI_IDS)


def test_prepare_fold_files(prepared):
    _, out_dir, _ = prepared

    for fold in range(2):
        train = read_json(out_dir / 'annotations' / f'fold{fold}_train.json')
        val = read_json(out_dir / 'annotations' / f'fold{fold}_val.json')
        train_patients = {s['patient_id'] for s in train['data_list']}
        val_patients = {s['patient_id'] for s in val['data_list']}
        assert val_patients, f'fold {fold} has no validation patients'
        assert not train_patients & val_patients
        assert train_patients | val_patients == {'p1', 'p2', 'p3', 'p4'}
        assert all(s['fold'] == fold for s in val['data_list'])


def test_prepare_patient_table(prepared):
    _, out_dir, _ = prepared

    with open(out_dir / 'splits' / 'patients.csv', newline='') as file:
        rows = {row['patient_id']: row for row in csv.DictReader(file)}

    assert set(rows) == {'p1', 'p2', 'p3', 'p4', 'p5'}
    assert rows['p5']['split'] == 'external'
    assert rows['p5']['fold'] == ''
    assert rows['p1']['rois'] == '2'
    assert rows['p3']['site'] == 'Site A'
    assert rows['p2']['label'] == 'SM'
    for patient_id in ('p1', 'p2', 'p3', 'p4'):
        assert rows[patient_id]['split'] in ('train', 'val')
        assert rows[patient_id]['fold'] in ('0', '1')


def test_prepare_manifest(prepared):
    _, out_dir, _ = prepared

    manifest = read_json(out_dir / 'manifest.json')

    assert manifest['classes'] == ['STB', 'SM']
    assert manifest['preprocessing']['n4_iterations'] == [10, 10]
    assert manifest['preprocessing']['margin'] == 0.1
    assert manifest['preprocessing']['n4'] is True
    assert manifest['split']['external_sites'] == ['Site B']
    assert manifest['split']['n_folds'] == 2
    assert manifest['split']['rois']['external'] == 1
    records = {record['roi_id']: record for record in manifest['rois']}
    assert sorted(records) == sorted(ROI_IDS)
    for roi_id, record in records.items():
        crop = out_dir / record['crop']
        assert record['crop_sha256'] == sha256_of_file(crop), roi_id
        assert list(sitk.ReadImage(str(crop)).GetSize()) == \
            record['crop_size'], roi_id


def test_prepare_manifest_sources(prepared):
    cohort_dir, out_dir, _ = prepared

    records = {r['roi_id']: r for r in
               read_json(out_dir / 'manifest.json')['rois']}

    assert records['p2_a']['source'] == 'images/p2_volume.nii.gz'
    assert records['p2_a']['slice_index'] == 1
    assert records['p3_a']['source'] == 'dicom/p3'
    assert records['p3_b']['instance_number'] == 1
    assert records['p4_a']['source'] is None
    assert records['p1_a']['source_sha256'] == sha256_of_file(
        cohort_dir / 'images' / 'p1.nii.gz')
    assert records['p1_a']['annotation_sha256'] == sha256_of_file(
        cohort_dir / 'annotations' / 'p1_a.json')


def test_prepare_boxes_and_square_pixels(prepared):
    _, out_dir, _ = prepared

    records = {r['roi_id']: r for r in
               read_json(out_dir / 'manifest.json')['rois']}

    # p1_a: rectangle (20, 18)..(40, 33) is a 21 x 16 pixel box. A 10% margin
    # adds 2 columns and 2 rows per side.
    assert records['p1_a']['box'] == [18, 16, 43, 36]
    # p1 has 0.6 x 0.9 mm pixels: the crop is resampled to 0.6 mm squares.
    assert records['p1_a']['source_spacing'] == pytest.approx([0.6, 0.9])
    assert records['p1_a']['crop_spacing'] == pytest.approx([0.6, 0.6])
    assert records['p1_a']['crop_size'] == [25, 30]
    # p3 is a DICOM series with 0.7 mm square pixels: no resampling.
    x0, y0, x1, y1 = records['p3_b']['box']
    assert records['p3_b']['crop_size'] == [x1 - x0, y1 - y0]
    assert records['p3_b']['crop_spacing'] == pytest.approx([0.7, 0.7])


def expected_crop(image: sitk.Image, annotation: Path) -> np.ndarray:
    """Run CONFIG's steps on one slice with the public functions."""
    image, mask = correct_bias_field(image,
                                     shrink_factor=CONFIG.shrink_factor,
                                     iterations=CONFIG.n4_iterations)
    image = normalize_intensity(image, mask)
    width, height = image.GetSize()
    box = lesion_box(load_labelme(annotation), height, width,
                     margin=CONFIG.margin)
    return sitk.GetArrayFromImage(crop_lesion(image, box)).astype(int)


@pytest.mark.parametrize('roi_id, chosen', [('p3_a', 2), ('p3_b', 0),
                                            ('p2_a', 1)])
def test_prepare_reads_chosen_slice(prepared, roi_id, chosen):
    cohort_dir, out_dir, _ = prepared
    source = cohort_dir / ('images/p2_volume.nii.gz'
                           if roi_id == 'p2_a' else 'dicom/p3')
    crop = sitk.GetArrayFromImage(sitk.ReadImage(
        str(out_dir / 'crops' / f'{roi_id}.png'))).astype(int)

    # p3_b names InstanceNumber 1, which is slice 0 in position order.
    for slice_index in range(3):
        expected = expected_crop(read_slice(source, slice_index),
                                 cohort_dir / 'annotations' /
                                 f'{roi_id}.json')
        assert expected.shape == crop.shape
        difference = np.abs(expected - crop)
        if slice_index == chosen:
            assert difference.max() <= 1, slice_index
        else:
            assert difference.mean() > 3, slice_index


def test_prepare_no_dicom_identifiers(prepared):
    cohort_dir, out_dir, _ = prepared
    source = b''.join(path.read_bytes()
                      for path in (cohort_dir / 'dicom').rglob('*.dcm'))
    for text in PHI_STRINGS:
        assert text.encode() in source, 'the phantom lacks the identifier'

    for path in out_dir.rglob('*'):
        if path.is_file():
            content = path.read_bytes()
            for text in PHI_STRINGS:
                assert text.encode() not in content, path
                assert text.lower().encode() not in content.lower(), path
        for text in PHI_STRINGS:
            assert text.lower() not in path.name.lower(), path


# Re-runs and the per-slice cache.


def test_rerun_reprocesses_nothing(editable):
    cohort_dir, out_dir, _ = editable
    before_identity = crop_identities(out_dir)
    before_bytes = crop_bytes(out_dir)
    cache_before = sorted(path.name for path in (out_dir / 'cache').iterdir())

    manifest = prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)

    assert crop_identities(out_dir) == before_identity
    assert crop_bytes(out_dir) == before_bytes
    assert sorted(path.name for path in (out_dir / 'cache').iterdir()) == \
        cache_before
    assert len(manifest['rois']) == len(ROI_IDS)


def test_rerun_after_annotation_change(editable):
    cohort_dir, out_dir, slices = editable
    before_identity = crop_identities(out_dir)
    before_bytes = crop_bytes(out_dir)

    write_labelme(cohort_dir / 'annotations' / 'p1_a.json',
                  [rectangle(10, 10, 30, 30)], 64, 64)
    manifest = prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)

    after_identity = crop_identities(out_dir)
    rewritten = {name[:-4] for name in after_identity
                 if after_identity[name] != before_identity[name]}
    # p1_b lies on the same slice, so the whole slice is processed again.
    assert rewritten == set(slices['p1'])
    assert crop_bytes(out_dir)['p1_a.png'] != before_bytes['p1_a.png']
    assert crop_bytes(out_dir)['p1_b.png'] == before_bytes['p1_b.png']
    record = next(r for r in manifest['rois'] if r['roi_id'] == 'p1_a')
    assert record['box'] == [8, 8, 33, 33]


def test_rerun_after_parameter_change(editable):
    cohort_dir, out_dir, _ = editable
    before_identity = crop_identities(out_dir)

    config = PreprocessConfig(n4_iterations=(10, 10), margin=0.3)
    manifest = prepare_cohort(cohort_dir, out_dir, config, **SPLIT_ARGS)

    after_identity = crop_identities(out_dir)
    for name, identity in after_identity.items():
        assert identity != before_identity[name], name
    assert manifest['preprocessing']['margin'] == 0.3


def test_rerun_after_image_change(editable):
    cohort_dir, out_dir, _ = editable
    before_identity = crop_identities(out_dir)

    write_image(cohort_dir / 'images' / 'p5.nii.gz',
                textured_phantom(seed=99))
    prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)

    after_identity = crop_identities(out_dir)
    rewritten = {name[:-4] for name in after_identity
                 if after_identity[name] != before_identity[name]}
    assert rewritten == {'p5_a'}


def test_rerun_after_labelme_image_change(editable):
    cohort_dir, out_dir, _ = editable
    before_bytes = crop_bytes(out_dir)

    png = np.clip(textured_phantom(seed=98) * 1.2, 0, 255).astype(np.uint8)
    write_image(cohort_dir / 'images_png' / 'p4.png', png)
    prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)

    assert crop_bytes(out_dir)['p4_a.png'] != before_bytes['p4_a.png']


def test_rerun_restores_damaged_crop(editable):
    cohort_dir, out_dir, _ = editable
    before_bytes = crop_bytes(out_dir)

    (out_dir / 'crops' / 'p2_a.png').write_bytes(b'damaged')
    prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)

    assert crop_bytes(out_dir) == before_bytes


def test_prepare_same_crops_in_new_folder(editable, tmp_path):
    cohort_dir, out_dir, _ = editable

    prepare_cohort(cohort_dir, tmp_path / 'again', CONFIG, **SPLIT_ARGS)

    assert crop_bytes(tmp_path / 'again') == crop_bytes(out_dir)


def test_prepare_writes_whole_slices(prepared):
    _, out_dir, _ = prepared
    manifest = read_json(out_dir / 'manifest.json')

    by_slice = {}
    for roi in manifest['rois']:
        slice_path = out_dir / roi['slice']
        assert slice_path.is_file()
        assert sha256_of_file(slice_path) == roi['slice_sha256']
        by_slice.setdefault(roi['slice'], []).append(roi)
    for name, rois in by_slice.items():
        # Named after one of its ROIs, never after the source file.
        assert Path(name).stem in {roi['roi_id'] for roi in rois}
        width, height = rois[0]['source_size']
        image = sitk.ReadImage(str(out_dir / name))
        assert image.GetSize() == (width, height)
        assert image.GetPixelID() == sitk.sitkUInt8


def test_crop_is_cut_from_saved_slice(prepared):
    _, out_dir, _ = prepared
    manifest = read_json(out_dir / 'manifest.json')
    roi = next(r for r in manifest['rois']
               if r['crop_spacing'][0] == r['crop_spacing'][1]
               and r['source_spacing'][0] == r['source_spacing'][1])
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(out_dir / roi['slice'])))
    crop = sitk.GetArrayFromImage(sitk.ReadImage(str(out_dir / roi['crop'])))
    x0, y0, x1, y1 = roi['box']
    assert np.array_equal(whole[y0:y1, x0:x1], crop)


def test_rerun_restores_missing_slice(editable):
    cohort_dir, out_dir, _ = editable
    manifest = read_json(out_dir / 'manifest.json')
    slice_path = out_dir / manifest['rois'][0]['slice']
    before = slice_path.read_bytes()
    before_crops = crop_identities(out_dir)

    slice_path.unlink()
    prepare_cohort(cohort_dir, out_dir, CONFIG, **SPLIT_ARGS)

    assert slice_path.read_bytes() == before
    changed = {name for name, identity in crop_identities(out_dir).items()
               if before_crops[name] != identity}
    # Only the crops of that one slice were written again.
    assert changed
    assert len(changed) < len(before_crops)


def test_max_pixels_skips_large_slices(tmp_path):
    cohort_dir, out_dir = tmp_path / 'cohort', tmp_path / 'out'
    write_phantom_cohort(cohort_dir)
    config = PreprocessConfig(n4_iterations=(10, 10), margin=0.1,
                              max_pixels=100)

    with pytest.raises(SliceReadError, match='limit max_pixels=100'):
        prepare_cohort(cohort_dir, out_dir, config, strict=True,
                       **SPLIT_ARGS)


def test_max_pixels_listed_in_quality(tmp_path):
    cohort_dir, out_dir = tmp_path / 'cohort', tmp_path / 'out'
    write_phantom_cohort(cohort_dir)
    tool = load_prepare_data_tool()

    tool.main([str(cohort_dir), str(out_dir), '--max-pixels', '100'] +
              CLI_ARGS)

    quality = read_json(out_dir / 'quality.json')
    assert quality['problems']
    for problem in quality['problems']:
        assert problem['error'] == 'SliceReadError'
        assert 'max_pixels=100' in problem['message']
    assert not (out_dir / 'crops').exists() or not any(
        (out_dir / 'crops').iterdir())


def test_max_pixels_not_in_cache_key(editable):
    cohort_dir, out_dir, _ = editable
    before = crop_identities(out_dir)

    config = PreprocessConfig(n4_iterations=(10, 10), margin=0.1,
                              max_pixels=10**9)
    prepare_cohort(cohort_dir, out_dir, config, **SPLIT_ARGS)

    assert crop_identities(out_dir) == before


def test_manifest_records_n4_convergence(prepared):
    _, out_dir, _ = prepared
    parameters = read_json(out_dir / 'manifest.json')['preprocessing']
    assert parameters['n4_convergence'] == pytest.approx(0.001)


# The leakage guard of the dataset.


def test_dataset_builds_from_prepared(prepared):
    _, out_dir, _ = prepared

    dataset = T2CropDataset(data_root=str(out_dir), split='train')

    train = read_json(out_dir / 'annotations' / 'train.json')['data_list']
    assert len(dataset) == len(train)
    assert dataset.metainfo['classes'] == ('STB', 'SM')


@pytest.mark.parametrize('split', ['train', 'val', 'all'])
def test_dataset_rejects_hand_edited_split(editable, split):
    _, out_dir, _ = editable
    train = read_json(out_dir / 'annotations' / 'train.json')
    val_path = out_dir / 'annotations' / 'val.json'
    val = read_json(val_path)
    leaked = train['data_list'][0]
    val['data_list'].append(dict(leaked, split='val'))
    val_path.write_text(json.dumps(val), encoding='utf-8')

    with pytest.raises(LeakageError) as error:
        T2CropDataset(data_root=str(out_dir), split=split)
    assert f"patient {leaked['patient_id']}" in str(error.value)


def test_dataset_rejects_fold_leak(editable):
    _, out_dir, _ = editable
    fold_train = read_json(out_dir / 'annotations' / 'fold0_train.json')
    fold_val_path = out_dir / 'annotations' / 'fold0_val.json'
    fold_val = read_json(fold_val_path)
    fold_val['data_list'].append(fold_train['data_list'][0])
    fold_val_path.write_text(json.dumps(fold_val), encoding='utf-8')

    with pytest.raises(LeakageError):
        T2CropDataset(data_root=str(out_dir), split='fold0_train')


# The command-line tool.


def test_cli_reports_error(tmp_path, capsys):
    cohort_dir = tmp_path / 'cohort'
    write_phantom_cohort(cohort_dir)
    tool = load_prepare_data_tool()

    code = tool.main([str(cohort_dir), str(tmp_path / 'out'),
                      '--external-sites', 'Site C', '--no-progress'])

    assert code == 1
    error = capsys.readouterr().err
    assert "external site(s) ['Site C']" in error
    assert not (tmp_path / 'out' / 'manifest.json').exists()


def test_cli_rejects_output_in_cohort(tmp_path, capsys):
    cohort_dir = tmp_path / 'cohort'
    write_phantom_cohort(cohort_dir)
    tool = load_prepare_data_tool()

    code = tool.main([str(cohort_dir), str(cohort_dir), '--no-progress'])

    assert code == 1
    assert 'must differ from the cohort folder' in capsys.readouterr().err


def test_cli_parses_preprocessing_options():
    tool = load_prepare_data_tool()

    args = tool.parse_args(['in', 'out', '--no-n4', '--percentiles', '1',
                            '99', '--lesion-labels', 'lesion', 'tumour',
                            '--crop-mode', 'union', '--keep-pixel-spacing'])

    assert args.no_n4 and args.keep_pixel_spacing
    assert args.percentiles == [1.0, 99.0]
    assert args.lesion_labels == ['lesion', 'tumour']
    assert args.crop_mode == 'union'


def test_crops_independent_of_workers(tmp_path):
    from helpers import write_phantom_cohort
    from stbsm_mm.preprocessing import prepare_cohort
    from stbsm_mm.utils import sha256_of_file

    root = tmp_path / 'cohort'
    write_phantom_cohort(root)
    checksums = []
    for workers in (1, 2):
        out_dir = tmp_path / f'workers{workers}'
        prepare_cohort(root, out_dir, external_sites=['Site B'], n_folds=0,
                       val_fraction=0.5, workers=workers, progress=False)
        checksums.append({path.name: sha256_of_file(path)
                          for path in (out_dir / 'crops').glob('*.png')})
    assert checksums[0] == checksums[1]
