"""End to end on the real demo cohort: prepare, train, test, resume, gloo.

The demo cohort is real sagittal T2 MRI (SPIDER); its label is a Modic
endplate change (``modic``) versus none. The Philips patients are the
external test set. Schedules are a single short epoch: these tests check
the machinery and that every figure follows from the saved predictions,
not the accuracy.
"""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score)

from conftest import DEMO_EXTERNAL_PATIENTS, run_tool
from stbsm_mm.utils import sha256_of_file

QUICK = [
    'train_cfg.max_epochs=1',
    'train_dataloader.dataset.times=1',
    'train_dataloader.batch_size=8',
    'val_dataloader.batch_size=16',
    'test_dataloader.batch_size=16',
    'default_hooks.logger.interval=1',
]


def train(config, work_dir, data_root, *extra, options=()):
    cfg_options = [f'data_root={data_root}', *QUICK, *options]
    return run_tool('tools/train.py', config, '--work-dir', work_dir, *extra,
                    '--cfg-options', *cfg_options)


@pytest.fixture(scope='module')
def resnet34_run(spider_prepared, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('resnet34_run')
    train('configs/stbsm/resnet34_stbsm.py', work_dir, spider_prepared)
    return work_dir


def read_predictions(path):
    with open(path, newline='') as file:
        return list(csv.DictReader(file))


def check_figures_follow_from_predictions(output_dir, n_images):
    metrics = json.loads((output_dir / 'metrics.json').read_text())
    rows = read_predictions(output_dir / 'predictions.csv')
    assert len(rows) == n_images
    assert metrics['n_images'] == n_images

    classes = metrics['classes']
    positive = metrics['positive_index']
    labels = np.array([int(row['label_index']) for row in rows])
    scores = np.array([float(row[f'score_{classes[positive]}'])
                       for row in rows])
    predicted_positive = scores >= metrics['threshold']
    truth_positive = labels == positive
    predicted = np.where(predicted_positive, positive, 1 - positive)

    assert [row['pred_label'] for row in rows] == [
        classes[index] for index in predicted
    ]
    assert metrics['accuracy'] == pytest.approx(
        accuracy_score(labels, predicted))
    assert metrics['sensitivity'] == pytest.approx(
        recall_score(truth_positive, predicted_positive))
    assert metrics['specificity'] == pytest.approx(
        recall_score(~truth_positive, ~predicted_positive))
    if predicted_positive.any():
        assert metrics['precision'] == pytest.approx(
            precision_score(truth_positive, predicted_positive))
    else:
        assert metrics['precision'] is None
    assert metrics['f1'] == pytest.approx(
        f1_score(truth_positive, predicted_positive, zero_division=0))
    assert metrics['macro_sensitivity'] == pytest.approx(
        recall_score(labels, predicted, average='macro'))
    assert metrics['auc'] == pytest.approx(
        roc_auc_score(truth_positive, scores))
    assert metrics['confusion_matrix'] == confusion_matrix(
        labels, predicted, labels=[0, 1]).tolist()
    return metrics, rows


def test_prepare_real_cohort(spider_prepared):
    manifest = json.loads((spider_prepared / 'manifest.json').read_text())
    assert manifest['classes'] == ['modic', 'no_modic']
    assert len(manifest['rois']) == 92
    external = {r['patient_id'] for r in manifest['rois']
                if r['split'] == 'external'}
    assert external == DEMO_EXTERNAL_PATIENTS
    for record in manifest['rois']:
        crop = spider_prepared / record['crop']
        assert sha256_of_file(crop) == record['crop_sha256']
        assert record['crop_spacing'][0] == pytest.approx(
            record['crop_spacing'][1])
        # Slices with bright fat once gave near-black crops (mean below 3).
        assert cv2.imread(str(crop), cv2.IMREAD_GRAYSCALE).mean() > 15, crop


def test_resnet34_external_test(resnet34_run, spider_prepared):
    checkpoint = resnet34_run / 'epoch_1.pth'
    run_tool('tools/test.py', 'configs/stbsm/resnet34_stbsm_external.py',
             checkpoint, '--cfg-options', f'data_root={spider_prepared}')

    output_dir = resnet34_run / 'external'
    metrics, rows = check_figures_follow_from_predictions(output_dir, 29)
    assert metrics['positive_class'] == 'modic'
    for key in ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1',
                'macro_precision', 'macro_sensitivity', 'macro_f1', 'auc',
                'confusion_matrix', 'averaging'):
        assert key in metrics
    assert {row['patient_id'] for row in rows} == DEMO_EXTERNAL_PATIENTS

    summary = json.loads((output_dir / 'summary.json').read_text())
    assert summary['n_images'] == 29
    assert summary['n_patients'] == len(DEMO_EXTERNAL_PATIENTS)
    assert summary['patient_figures']['n_images'] == len(
        DEMO_EXTERNAL_PATIENTS)
    assert summary['image']['accuracy']['value'] == pytest.approx(
        metrics['accuracy'])
    for level in ('image', 'patient'):
        for name, entry in summary[level].items():
            if entry['value'] is None or entry['low'] is None:
                continue
            assert entry['low'] - 1e-9 <= entry['value'] <= (
                entry['high'] + 1e-9), (level, name, entry)
    assert 'patient level (n=4)' in (output_dir / 'summary.md').read_text()

    record = json.loads((output_dir / 'test_run.json').read_text())
    assert record['checkpoint_sha256'] == sha256_of_file(checkpoint)
    assert record['split'] == 'external'
    assert record['versions']['mmpretrain'] == '1.2.0'


def test_validation_predictions_written(resnet34_run):
    manifest_val = 15  # ROIs of the two validation patients (seed 0)
    check_figures_follow_from_predictions(resnet34_run / 'val', manifest_val)


def test_mvitv2_train_and_external_test(spider_prepared, tmp_path):
    train('configs/stbsm/mvitv2_stbsm.py', tmp_path, spider_prepared,
          options=['train_dataloader.dataset.dataset.indices=16'])
    run_tool('tools/test.py', 'configs/stbsm/mvitv2_stbsm_external.py',
             tmp_path / 'epoch_1.pth', '--cfg-options',
             f'data_root={spider_prepared}')
    check_figures_follow_from_predictions(tmp_path / 'external', 29)


def test_resume_from_checkpoint(resnet34_run, spider_prepared, tmp_path):
    work_dir = tmp_path / 'resumed'
    shutil.copytree(resnet34_run, work_dir)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))

    result = train('configs/stbsm/resnet34_stbsm.py', work_dir,
                   spider_prepared, '--resume',
                   options=['train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1' in result.output
    assert 'Epoch(train) [2]' in result.output
    assert 'Epoch(train) [1]' not in result.output
    assert (work_dir / 'epoch_2.pth').is_file()

    run_tool('tools/test.py', 'configs/stbsm/resnet34_stbsm_external.py',
             work_dir / 'epoch_2.pth', '--cfg-options',
             f'data_root={spider_prepared}')
    check_figures_follow_from_predictions(work_dir / 'external', 29)


def test_two_process_gloo_training(spider_prepared, tmp_path):
    result = run_tool('tools/dist_train.sh',
                      'configs/stbsm/resnet34_stbsm.py', 2, '--work-dir',
                      tmp_path, '--cfg-options',
                      f'data_root={spider_prepared}', *QUICK,
                      env={'PORT': '29517'})
    assert 'Training with 2 process(es), distributed backend: gloo' in (
        result.output)
    # 48 training crops, batch 8 per process, 2 processes: 3 steps.
    assert 'Epoch(train) [1][3/3]' in result.output
    assert (tmp_path / 'epoch_1.pth').is_file()
    check_figures_follow_from_predictions(tmp_path / 'val', 15)


def test_train_run_record(resnet34_run, spider_prepared):
    record = json.loads((resnet34_run / 'train_run.json').read_text())
    assert record['manifest_sha256'] == sha256_of_file(
        spider_prepared / 'manifest.json')
    assert record['split'] == 'train'
    assert record['seed'] == 0
    assert record['world_size'] == 1
    assert record['versions']['torch'].startswith('2.14.1')
    trusted = json.loads((resnet34_run / 'checkpoint_sha256.json').read_text())
    assert trusted['epoch_1.pth'] == sha256_of_file(resnet34_run /
                                                    'epoch_1.pth')
    for name, digest in trusted.items():
        assert digest == sha256_of_file(resnet34_run / name)


def test_train_without_prepared_data(tmp_path):
    work_dir = tmp_path / 'work'
    result = run_tool('tools/train.py', 'configs/stbsm/resnet34_stbsm.py',
                      '--work-dir', work_dir, '--cfg-options',
                      f'data_root={tmp_path / "never_prepared"}',
                      expect_ok=False)
    assert result.returncode != 0
    assert 'never_prepared/annotations/train.json not found' in result.output
    assert 'tools/prepare_data.py' in result.output
    assert not work_dir.exists()


def test_same_seed_same_metrics(spider_prepared, tmp_path):
    options = ['train_dataloader.dataset.dataset.indices=16']
    for name in ('first', 'second'):
        train('configs/stbsm/resnet34_stbsm.py', tmp_path / name,
              spider_prepared, options=options)
    first = json.loads((tmp_path / 'first' / 'val' / 'metrics.json')
                       .read_text())
    second = json.loads((tmp_path / 'second' / 'val' / 'metrics.json')
                        .read_text())
    assert first == second
    assert (tmp_path / 'first' / 'val' / 'predictions.csv').read_bytes() == (
        tmp_path / 'second' / 'val' / 'predictions.csv').read_bytes()


def test_two_process_test_matches_one(resnet34_run, spider_prepared,
                                      tmp_path):
    checkpoint = resnet34_run / 'epoch_1.pth'
    for name, launcher in (('single', None), ('double', 2)):
        if launcher:
            run_tool('tools/dist_test.sh',
                     'configs/stbsm/resnet34_stbsm_external.py', checkpoint,
                     launcher, '--work-dir', tmp_path / name,
                     '--cfg-options', f'data_root={spider_prepared}')
        else:
            run_tool('tools/test.py',
                     'configs/stbsm/resnet34_stbsm_external.py', checkpoint,
                     '--work-dir', tmp_path / name, '--cfg-options',
                     f'data_root={spider_prepared}')
    single = read_predictions(tmp_path / 'single' / 'external' /
                              'predictions.csv')
    double = read_predictions(tmp_path / 'double' / 'external' /
                              'predictions.csv')
    assert len(double) == 29
    assert sorted(r['roi_id'] for r in double) == sorted(
        r['roi_id'] for r in single)
    by_roi = {r['roi_id']: r for r in single}
    for row in double:
        assert float(row['score_modic']) == pytest.approx(
            float(by_roi[row['roi_id']]['score_modic']), abs=1e-5)


def test_youden_threshold_carried_to_external(resnet34_run, spider_prepared,
                                              tmp_path):
    import importlib.util

    from conftest import REPO_ROOT
    from stbsm_mm.evaluation import youden_threshold

    checkpoint = resnet34_run / 'epoch_1.pth'
    result = run_tool('tools/test.py', 'configs/stbsm/resnet34_stbsm.py',
                      checkpoint, '--work-dir', tmp_path, '--threshold',
                      'youden', '--bootstrap', '100', '--cfg-options',
                      f'data_root={spider_prepared}')
    chosen = json.loads((tmp_path / 'val' / 'threshold.json').read_text())
    assert (f'Youden threshold on split val: {chosen["threshold"]:.6g}'
            in result.output)
    assert chosen['method'] == 'youden'
    assert chosen['split'] == 'val'
    assert chosen['positive_class'] == 'modic'
    assert chosen['n_images'] == 15
    assert chosen['checkpoint_sha256'] == sha256_of_file(checkpoint)

    # The threshold is the Youden one of the saved validation scores, and
    # every validation figure and call is recomputed at it.
    val_metrics, val_rows = check_figures_follow_from_predictions(
        tmp_path / 'val', 15)
    assert val_metrics['threshold'] == chosen['threshold']
    assert chosen['threshold'] == youden_threshold(
        [row['label'] == 'modic' for row in val_rows],
        [float(row['score_modic']) for row in val_rows])
    val_summary = json.loads((tmp_path / 'val' / 'summary.json').read_text())
    assert val_summary['threshold'] == chosen['threshold']
    assert val_summary['image']['accuracy']['value'] == pytest.approx(
        val_metrics['accuracy'])
    record = json.loads((tmp_path / 'val' / 'test_run.json').read_text())
    assert record['metrics']['diagnosis/accuracy'] == pytest.approx(
        val_metrics['accuracy'])

    run_tool('tools/test.py', 'configs/stbsm/resnet34_stbsm_external.py',
             checkpoint, '--work-dir', tmp_path, '--threshold-file',
             tmp_path / 'val' / 'threshold.json', '--bootstrap', '100',
             '--cfg-options', f'data_root={spider_prepared}')
    metrics, rows = check_figures_follow_from_predictions(
        tmp_path / 'external', 29)
    assert metrics['threshold'] == chosen['threshold']
    assert not (tmp_path / 'external' / 'threshold.json').exists()

    summary = json.loads((tmp_path / 'external' / 'summary.json').read_text())
    is_modic = np.array([row['label'] == 'modic' for row in rows])
    scores = np.array([float(row['score_modic']) for row in rows])
    image = summary['calibration']['image']
    assert image['brier'] == pytest.approx(np.mean((scores - is_modic)**2))
    assert sum(image['reliability']['counts']) == 29
    assert sum(summary['calibration']['patient']['reliability']
               ['counts']) == len(DEMO_EXTERNAL_PATIENTS)
    assert 'Brier score' in (tmp_path / 'external' / 'summary.md').read_text()

    # Reader "always" calls every ROI modic; reader "half" reads every
    # second ROI and calls it right.
    reads = ['roi_id,reader,call']
    reads += [f'{row["roi_id"]},always,modic' for row in rows]
    reads += [f'{row["roi_id"]},half,{row["label"]}' for row in rows[::2]]
    reads_path = tmp_path / 'reads.csv'
    reads_path.write_text('\n'.join(reads) + '\n')
    # The tool runs in this process, which saves the start-up of a second
    # Python with torch; tests/test_readers.py covers its options.
    spec = importlib.util.spec_from_file_location(
        'compare_readers_tool', REPO_ROOT / 'tools' / 'compare_readers.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(reads_path), str(tmp_path / 'external'), '--names',
               'resnet34', '--out-dir', str(tmp_path / 'readers')])

    result = json.loads((tmp_path / 'readers' / 'readers.json').read_text())
    assert result['level'] == 'image'
    assert result['models'][0]['threshold'] == chosen['threshold']
    always, half = result['readers']
    n_modic = int(is_modic.sum())
    assert always['confusion_matrix'] == [[n_modic, 0], [29 - n_modic, 0]]
    assert always['sensitivity']['value'] == 1.0
    assert half['n'] == 15
    assert half['accuracy']['value'] == 1.0

    model_right = np.array([row['pred_label'] == row['label']
                            for row in rows])
    test_always, test_half = result['mcnemar']
    assert test_always['n'] == 29
    assert test_always['model_correct_reader_wrong'] == int(
        np.sum(model_right & ~is_modic))
    assert test_always['model_wrong_reader_correct'] == int(
        np.sum(~model_right & is_modic))
    assert test_half['model_correct_reader_wrong'] == 0
    assert test_half['model_wrong_reader_correct'] == int(
        np.sum(~model_right[::2]))

