"""stbsm-infer on a patient of the real demo cohort.

A ResNet-34 trained for two one-step epochs on the prepared demo cohort
supplies two models (epoch 1 and epoch 2). Patient 100 (Philips, external
split) is classified from its one-slice DICOM series and from its PNG copy.
Its pixels are not square (0.631 x 0.388 mm), so the PNG needs --spacing
for the square-pixel crops to match. The console command is run as a
subprocess, as a user runs it.
"""
import base64
import csv
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT, run_tool
from stbsm_mm.inference import (InferenceError, RESEARCH_NOTICE,
                                build_summary, load_roi_inputs,
                                load_trained_model, prepare_patient_slice,
                                resolve_checkpoint, write_outputs)
from stbsm_mm.inference.cli import main as infer_main

STBSM_INFER = REPO_ROOT / '.venv' / 'bin' / 'stbsm-infer'
PATIENT = '100'
ROIS = ('100_t2_ivd3', '100_t2_ivd8')

QUICK = [
    'train_cfg.max_epochs=2',
    'train_dataloader.dataset.times=1',
    'train_dataloader.batch_size=8',
    'train_dataloader.dataset.dataset.indices=8',
    'val_dataloader.batch_size=16',
    'default_hooks.checkpoint.interval=1',
    'train_cfg.val_interval=2',
    # Weights only: smaller files are faster to write and to checksum.
    'default_hooks.checkpoint.save_optimizer=False',
    'default_hooks.checkpoint.save_param_scheduler=False',
    # Without the warm-up's 1000-fold smaller learning rate, two steps move
    # the model away from its initialisation, whose probabilities are close
    # to 0.5 for any crop. A DICOM-versus-PNG comparison needs a model whose
    # output depends on the crop.
    'param_scheduler.0.start_factor=1.0',
]

# The demo's DICOM file stores PixelSpacing with 6 decimals (0.630518,
# 0.387923), while the NIfTI and the --spacing given here carry the float32
# values (0.6305175..., 0.3879231...). N4 fits its B-spline field over the
# slice's physical extent, so this change of 5e-7 mm moves the crops of
# this patient by up to 2 grey levels of 255. The PNG with the DICOM's
# rounded spacing gives identical crops
# (test_spacing_explains_dicom_difference). Measured with models trained
# as in this file (N4 convergence 0.001), the DICOM and PNG
# runs differed by at most 6.7e-4 in probability and 0.039 in log-odds,
# while the two ROIs differ by more than 0.05 in probability.
CROP_TOLERANCE = 4
PROBABILITY_TOLERANCE = 0.005
LOG_ODDS_TOLERANCE = 0.1

IDENTIFYING_KEYWORDS = ('PatientName', 'PatientID', 'PatientBirthDate',
                        'InstitutionName', 'AccessionNumber', 'StudyDate',
                        'SeriesDate', 'ReferringPhysicianName')


def infer(*args, expect_ok=True):
    """Run the stbsm-infer console command and return the result."""
    result = subprocess.run([str(STBSM_INFER), *map(str, args)],
                            cwd=REPO_ROOT, text=True, capture_output=True,
                            timeout=300)
    if expect_ok and result.returncode != 0:
        pytest.fail(f'stbsm-infer exited with {result.returncode}:\n'
                    f'{result.stderr[-6000:]}')
    return result


def patient_rows(demo_cohort):
    with open(demo_cohort / 'rois.csv', newline='') as file:
        return {row['roi_id']: row for row in csv.DictReader(file)
                if row['roi_id'] in ROIS}


def nifti_spacing_argument(demo_cohort, rows):
    col, row = sitk.ReadImage(
        str(demo_cohort / rows[ROIS[0]]['image'])).GetSpacing()
    return f'{row!r},{col!r}'


def link_work_dir(source: Path, target: Path) -> Path:
    """Copy a work_dir's small files and link its checkpoints."""
    target.mkdir()
    for path in source.iterdir():
        if path.suffix == '.pth':
            (target / path.name).symlink_to(path)
        elif path.is_file():
            shutil.copy(path, target / path.name)
    return target


def edit_run_record(work_dir: Path, **changes) -> None:
    path = work_dir / 'train_run.json'
    record = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    path.write_text(json.dumps(record))


def log_odds(probability):
    probability = min(max(probability, 1e-12), 1 - 1e-12)
    return math.log(probability / (1 - probability))


@pytest.fixture(scope='module')
def work_dir(spider_prepared, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('infer_train')
    run_tool('tools/train.py', 'configs/stbsm/resnet34_stbsm.py',
             '--work-dir', work_dir, '--cfg-options',
             f'data_root={spider_prepared}', *QUICK)
    return work_dir


@pytest.fixture(scope='module')
def runs(work_dir, demo_cohort, spider_prepared, tmp_path_factory):
    """Infer patient 100 from DICOM and from PNG (plus a --box ROI)."""
    root = tmp_path_factory.mktemp('infer_runs')
    rows = patient_rows(demo_cohort)
    rois = [arg for roi in ROIS
            for arg in ('--roi', demo_cohort / rows[roi]['annotation'])]
    models = ['--model', work_dir / 'epoch_1.pth',
              '--model', work_dir / 'epoch_2.pth']

    dicom = infer(demo_cohort / rows[ROIS[0]]['dicom'], *rois, *models,
                  '--patient-id', 'case-017', '--out-dir', root / 'dicom')

    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    box = next(record['box'] for record in manifest['rois']
               if record['roi_id'] == ROIS[0])
    threshold_file = root / 'threshold.json'
    threshold_file.write_text(json.dumps({'threshold': 0.3,
                                          'method': 'youden'}))
    png_path = demo_cohort / 'images_png' / f'{PATIENT}_t2.png'
    png = infer(png_path, *rois, '--box', ','.join(map(str, box)), *models,
                '--spacing', nifti_spacing_argument(demo_cohort, rows),
                '--threshold-file', threshold_file,
                '--patient-id', 'case-017', '--out-dir', root / 'png')
    return {
        'root': root,
        'box': box,
        'manifest': manifest,
        'console': dicom.stdout + dicom.stderr + png.stdout + png.stderr,
        'dicom': json.loads((root / 'dicom' / 'summary.json').read_text()),
        'png': json.loads((root / 'png' / 'summary.json').read_text()),
    }


def test_run_record_preprocessing(work_dir, spider_prepared):
    record = json.loads((work_dir / 'train_run.json').read_text())
    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    assert record['preprocessing'] == manifest['preprocessing']
    assert record['classes'] == manifest['classes']


def test_moved_work_dir_loads(work_dir, spider_prepared, tmp_path):
    moved = link_work_dir(work_dir, tmp_path / 'moved')
    edit_run_record(moved, data_root=str(tmp_path / 'gone'))
    model = load_trained_model(moved)
    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    recorded = manifest['preprocessing']
    assert model.preprocessing_source == str(moved / 'train_run.json')
    assert model.preprocessing.shrink_factor == recorded['shrink_factor']
    assert model.preprocessing.n4_convergence == recorded['n4_convergence']
    assert model.checkpoint.name.startswith('best_')
    assert resolve_checkpoint(moved / 'epoch_1.pth') == (
        moved / 'epoch_1.pth', moved)


def test_nifti_crops_match_prepared(work_dir, demo_cohort, spider_prepared):
    rows = patient_rows(demo_cohort)
    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    records = {record['roi_id']: record for record in manifest['rois']}
    model = load_trained_model(work_dir)
    rois = load_roi_inputs([demo_cohort / rows[roi]['annotation']
                            for roi in ROIS], [])
    prepared = prepare_patient_slice(demo_cohort / rows[ROIS[0]]['image'],
                                     rois, model.preprocessing)
    for roi_id, roi in zip(ROIS, prepared.rois):
        crop = cv2.imread(str(spider_prepared / records[roi_id]['crop']),
                          cv2.IMREAD_GRAYSCALE)
        assert list(roi.box) == records[roi_id]['box']
        assert roi.crop.shape == crop.shape
        assert np.array_equal(roi.crop, crop), roi_id


def test_spacing_explains_dicom_difference(work_dir, demo_cohort):
    rows = patient_rows(demo_cohort)
    config = load_trained_model(work_dir).preprocessing
    rois = load_roi_inputs([demo_cohort / rows[ROIS[0]]['annotation']], [])
    dicom = prepare_patient_slice(demo_cohort / rows[ROIS[0]]['dicom'], rois,
                                  config)
    png = prepare_patient_slice(
        demo_cohort / 'images_png' / f'{PATIENT}_t2.png', rois, config,
        spacing=dicom.spacing)
    assert dicom.spacing == (0.630518, 0.387923)
    assert np.array_equal(dicom.rois[0].crop, png.rois[0].crop)


def test_dicom_png_same_probabilities(runs):
    dicom = {roi['roi']: roi for roi in runs['dicom']['rois']}
    png = {roi['roi']: roi for roi in runs['png']['rois']}
    assert set(dicom) == set(ROIS)
    for roi in ROIS:
        assert dicom[roi]['crop_size'] == png[roi]['crop_size']
        crops = [cv2.imread(str(runs['root'] / key / dicom[roi]['crop']),
                            cv2.IMREAD_GRAYSCALE).astype(int)
                 for key in ('dicom', 'png')]
        assert np.abs(crops[0] - crops[1]).max() <= CROP_TOLERANCE, roi
        for model, entry in dicom[roi]['models'].items():
            for name, probability in entry['probabilities'].items():
                other = png[roi]['models'][model]['probabilities'][name]
                assert abs(probability - other) <= PROBABILITY_TOLERANCE, (
                    roi, model, name)
                assert abs(log_odds(probability) - log_odds(other)) <= (
                    LOG_ODDS_TOLERANCE), (roi, model, name)


def test_models_tell_rois_apart(runs):
    # Guards the tolerances above: a model that gave every crop the same
    # probability would pass any DICOM-versus-PNG comparison.
    first, second = (roi['models'] for roi in runs['dicom']['rois'])
    positive = runs['dicom']['positive_class']
    spread = max(abs(first[model]['probabilities'][positive] -
                     second[model]['probabilities'][positive])
                 for model in first)
    assert spread > 10 * PROBABILITY_TOLERANCE


def test_summary_means(runs):
    summary = runs['dicom']
    models = [model['name'] for model in summary['models']]
    classes = summary['classes']
    assert len(set(models)) == 2
    assert summary['notice'] == RESEARCH_NOTICE
    assert 'not a medical device' in summary['notice'].lower()
    assert summary['patient_id'] == 'case-017'

    for roi in summary['rois']:
        for name in classes:
            values = [roi['models'][model]['probabilities'][name]
                      for model in models]
            assert roi['mean']['probabilities'][name] == pytest.approx(
                np.mean(values))
        for model in models:
            assert sum(roi['models'][model]['probabilities'].values()) == (
                pytest.approx(1.0, abs=1e-5))

    patient = summary['patient']
    for model in models:
        for name in classes:
            values = [roi['models'][model]['probabilities'][name]
                      for roi in summary['rois']]
            assert patient['models'][model]['probabilities'][name] == (
                pytest.approx(np.mean(values)))
    for name in classes:
        values = [patient['models'][model]['probabilities'][name]
                  for model in models]
        assert patient['mean']['probabilities'][name] == pytest.approx(
            np.mean(values))


def test_predicted_class_threshold(runs):
    for key, threshold in (('dicom', 0.5), ('png', 0.3)):
        summary = runs[key]
        positive = summary['positive_class']
        negative = next(name for name in summary['classes']
                        if name != positive)
        entries = [summary['patient']['mean']]
        entries += [entry for roi in summary['rois']
                    for entry in [*roi['models'].values(), roi['mean']]]
        for entry in entries:
            assert entry['threshold'] == threshold
            expected = (positive if entry['probabilities'][positive] >=
                        threshold else negative)
            assert entry['predicted_class'] == expected


def test_box_crop_matches_prepared(runs, spider_prepared):
    summary = runs['png']
    box_roi = next(roi for roi in summary['rois'] if roi['kind'] == 'box')
    assert box_roi['box'] == runs['box']
    record = next(record for record in runs['manifest']['rois']
                  if record['roi_id'] == ROIS[0])
    crop = cv2.imread(str(runs['root'] / 'png' / box_roi['crop']),
                      cv2.IMREAD_GRAYSCALE)
    prepared = cv2.imread(str(spider_prepared / record['crop']),
                          cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(crop, prepared)
    outlined = next(roi for roi in summary['rois'] if roi['roi'] == ROIS[0])
    for model, entry in box_roi['models'].items():
        assert entry['probabilities'] == pytest.approx(
            outlined['models'][model]['probabilities'], abs=1e-6)


def test_html_embeds_overlay(runs):
    out_dir = runs['root'] / 'dicom'
    page = (out_dir / 'report.html').read_text()
    assert RESEARCH_NOTICE.replace("'", '&#x27;') in page
    assert 'src="http' not in page
    assert "src='http" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    summary = runs['dicom']
    overlay_path = summary['rois'][0]['models'][
        summary['models'][0]['name']]['cam_overlay']
    overlay = (out_dir / overlay_path).read_bytes()
    decoded = [cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8),
                            cv2.IMREAD_COLOR) for data in images]
    expected = cv2.imdecode(np.frombuffer(overlay, np.uint8),
                            cv2.IMREAD_COLOR)
    matches = [image for image in decoded
               if image is not None and image.shape == expected.shape
               and np.array_equal(image, expected)]
    assert matches


def test_no_dicom_identifiers(runs, demo_cohort):
    dataset = pydicom.dcmread(
        demo_cohort / 'dicom' / f'{PATIENT}_t2' / 'IM0001.dcm',
        stop_before_pixels=True)
    identifiers = set()
    for keyword in IDENTIFYING_KEYWORDS:
        value = str(dataset.get(keyword, '') or '').strip()
        if len(value) >= 4:
            identifiers.add(value.lower())
            identifiers.add(' '.join(value.split('^')).strip().lower())
    assert any(value.startswith('testname') for value in identifiers)

    findings = []
    for path in sorted(runs['root'].rglob('*')):
        data = path.name.lower().encode()
        if path.is_file():
            data += path.read_bytes().lower()
        findings += [f'{path}: {value}' for value in identifiers
                     if value.encode() in data]
    findings += [f'console: {value}' for value in identifiers
                 if value in runs['console'].lower()]
    assert not findings


def test_mismatched_preprocessing_fails(work_dir, demo_cohort, tmp_path):
    other = link_work_dir(work_dir, tmp_path / 'other')
    record = json.loads((other / 'train_run.json').read_text())
    edit_run_record(other, preprocessing=dict(record['preprocessing'],
                                              margin=0.1))
    rows = patient_rows(demo_cohort)
    result = infer(demo_cohort / rows[ROIS[0]]['image'], '--box',
                   '10,10,60,60', '--model', work_dir, '--model', other,
                   '--out-dir', tmp_path / 'out', expect_ok=False)
    assert result.returncode == 1
    assert 'different preprocessing' in result.stderr
    assert 'margin: 0.0' in result.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('case', [
    'missing_model', 'unreadable', 'outside', 'no_spacing',
    'no_preprocessing', 'out_dir', 'labelme_size'])
def test_invalid_input_fails(case, work_dir, demo_cohort, tmp_path):
    image = demo_cohort / 'images' / f'{PATIENT}_t2.nii.gz'
    model = work_dir
    box = '10,10,60,60'
    out_dir = tmp_path / 'out'
    if case == 'missing_model':
        model = tmp_path / 'nowhere'
        expected = 'no such work_dir or checkpoint'
    elif case == 'unreadable':
        image = tmp_path / 'slice.nii.gz'
        image.write_text('not an image')
        expected = 'SimpleITK could not read this file'
    elif case == 'outside':
        box = '400,700,500,800'
        expected = 'lies outside the 492x797 slice'
    elif case == 'no_spacing':
        image = demo_cohort / 'images_png' / f'{PATIENT}_t2.png'
        expected = 'Pass --spacing ROW,COL'
    elif case == 'no_preprocessing':
        model = link_work_dir(work_dir, tmp_path / 'old')
        edit_run_record(model, preprocessing=None,
                        data_root=str(tmp_path / 'gone'))
        expected = 'no recorded preprocessing'
    elif case == 'labelme_size':
        rows = patient_rows(demo_cohort)
        labelme = json.loads(
            (demo_cohort / rows[ROIS[0]]['annotation']).read_text())
        labelme['imageHeight'] += 10
        roi = tmp_path / 'resized.json'
        roi.write_text(json.dumps(labelme))
        expected = 'drawn on this slice'
    else:
        out_dir.mkdir()
        (out_dir / 'notes.txt').write_text('keep')
        expected = 'already contains files'

    roi_arguments = ['--box', box]
    if case == 'labelme_size':
        roi_arguments = ['--roi', str(roi)]
    with pytest.raises(SystemExit) as error:
        infer_main([str(image), *roi_arguments, '--model', str(model),
                    '--out-dir', str(out_dir)])
    message = str(error.value.code)
    if case == 'labelme_size':
        assert '--slice-index' in message
        assert 'rois.csv' not in message
    assert message.startswith('error: ')
    assert expected in message
    assert case == 'out_dir' or not out_dir.exists()


def test_overwrite_replaces_result(runs, work_dir, demo_cohort, tmp_path):
    out_dir = tmp_path / 'result'
    shutil.copytree(runs['root'] / 'dicom', out_dir)
    image = demo_cohort / 'images' / f'{PATIENT}_t2.nii.gz'
    arguments = [str(image), '--box', '184,392,255,573', '--model',
                 str(work_dir), '--out-dir', str(out_dir)]
    with pytest.raises(SystemExit):
        infer_main(arguments)
    assert infer_main([*arguments, '--overwrite']) == 0
    summary = json.loads((out_dir / 'summary.json').read_text())
    assert [roi['roi'] for roi in summary['rois']] == ['box1']
    assert not (out_dir / 'crops' / f'{ROIS[0]}.png').exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ['result']


def test_box_parse_invalid():
    from stbsm_mm.inference.preprocess import parse_box, parse_spacing
    with pytest.raises(InferenceError, match='not four integers'):
        parse_box('1,2,3')
    with pytest.raises(InferenceError, match='empty or negative'):
        parse_box('5,5,5,9')
    with pytest.raises(InferenceError, match='two positive numbers'):
        parse_spacing('0.5,-1')
    assert parse_spacing('0.4,0.6') == (0.6, 0.4)


def test_threshold_file_invalid(tmp_path):
    from stbsm_mm.inference.models import read_threshold_file
    path = tmp_path / 'threshold.json'
    path.write_text(json.dumps({'threshold': 1.5}))
    with pytest.raises(InferenceError, match='in \\[0, 1\\]'):
        read_threshold_file(path)
    path.write_text(json.dumps({'method': 'youden'}))
    with pytest.raises(InferenceError, match='no "threshold" entry'):
        read_threshold_file(path)
    with pytest.raises(InferenceError, match='file not found'):
        read_threshold_file(tmp_path / 'missing.json')


def test_slice_images_square_pixels(runs):
    # Patient 100's pixels are 0.631 mm wide and 0.388 mm tall, so the
    # 492 x 797 slice is shown about 800 pixels wide.
    out_dir = runs['root'] / 'dicom'
    summary = runs['dicom']
    width, height = summary['input']['size']
    row = summary['input']['spacing_mm']['row']
    col = summary['input']['spacing_mm']['col']
    aspect = (width * col) / (height * row)
    model = summary['models'][0]['name']
    paths = [out_dir / 'slice_rois.png',
             out_dir / summary['rois'][0]['models'][model]['cam_on_slice']]
    for path in paths:
        image = cv2.imread(str(path))
        assert image.shape[0] == height, path.name
        assert image.shape[1] > width, path.name
        assert abs(image.shape[1] - image.shape[0] * aspect) <= 1.0, path.name


def test_summary_cam_all_zero_flag(runs):
    for roi in runs['dicom']['rois']:
        for entry in roi['models'].values():
            assert isinstance(entry['cam_all_zero'], bool)


def fake_result(threshold, positive_probability, cam_all_zero):
    """A hand-made one-ROI, one-model result on a small slice."""
    from stbsm_mm.inference import (PatientPrediction, PreparedRoi,
                                    PreparedSlice)
    from stbsm_mm.inference.predict import ModelOutput

    crop = np.full((20, 10), 90, np.uint8)
    rgb = np.zeros((20, 10, 3), np.uint8)
    prepared = PreparedSlice(image=np.full((40, 30), 60, np.uint8),
                             spacing=(0.5, 0.5), spacing_source='header')
    prepared.rois.append(PreparedRoi(name='roi1', kind='box',
                                     box=(5, 5, 15, 25), crop=crop,
                                     crop_spacing=(0.5, 0.5)))
    probabilities = np.array([positive_probability,
                              1.0 - positive_probability])
    predicted = 0 if positive_probability >= threshold else 1
    prediction = PatientPrediction(classes=('STB', 'SM'), positive_index=0,
                                   thresholds={'net': threshold},
                                   ensemble_threshold=threshold)
    prediction.outputs['roi1'] = {'net': ModelOutput(
        probabilities=probabilities, predicted_index=predicted,
        cam_index=predicted, crop_overlay=rgb,
        slice_overlay=np.zeros((40, 30, 3), np.uint8),
        cam_all_zero=cam_all_zero)}
    models = [dict(name='net', threshold=threshold,
                   checkpoint_sha256='ab' * 32)]
    summary = build_summary(prediction, prepared, models, 'case-1',
                            {'format': 'png'}, {})
    return summary, prediction, prepared


@pytest.mark.parametrize('cam_all_zero', [True, False])
def test_html_cam_all_zero_note(cam_all_zero, tmp_path):
    from stbsm_mm.inference.report import CAM_ALL_ZERO_NOTE

    summary, prediction, prepared = fake_result(0.5, 0.7, cam_all_zero)
    write_outputs(tmp_path / 'out', summary, prediction, prepared)

    page = (tmp_path / 'out' / 'report.html').read_text()
    written = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    entry = written['rois'][0]['models']['net']
    assert entry['cam_all_zero'] is cam_all_zero
    assert (CAM_ALL_ZERO_NOTE in page) is cam_all_zero


def test_html_small_probability(tmp_path):
    summary, prediction, prepared = fake_result(2.26e-7, 2.04e-7, False)
    write_outputs(tmp_path / 'out', summary, prediction, prepared)

    page = (tmp_path / 'out' / 'report.html').read_text()
    assert '<td>2.04e-07</td>' in page
    assert '<td>0.000</td>' not in page
    assert 'SM (P(STB) &lt; 2.26e-07)' in page
    assert summary['rois'][0]['models']['net']['predicted_class'] == 'SM'
