"""tools/report.py on real test outputs, and the page in headless Chromium.

Two ResNet34 runs (seeds 0 and 1) are trained for one iteration on eight
64-px crops of the real demo cohort and tested on its validation and
external splits. The report is built from their work dirs.
"""
import base64
import csv
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from conftest import REPO_ROOT, run_tool
from stbsm_mm.reporting import ReportInputError, build_report
from stbsm_mm.utils import sha256_of_file

MODELS = {'ResNet34 seed 0': 0, 'ResNet34 seed 1': 1}
SPLITS = ('val', 'external')
# Crops resized to 64 px by the pipeline's Resize step (index 2 in
# configs/_base_/datasets/t2_crops.py) keep a CPU run to seconds.
SMALL_INPUT = '(64,64)'
CHROMIUM = Path('/usr/bin/chromium')


def loader_options(name):
    return [f'{name}.num_workers=0', f'{name}.persistent_workers=False',
            f'{name}.batch_size=32']


def train_and_test(data_root, work_dir, seed):
    common = [f'data_root={data_root}', f'randomness.seed={seed}']
    run_tool('tools/train.py', 'configs/stbsm/resnet34_stbsm.py',
             '--work-dir', work_dir, '--cfg-options', *common,
             'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
             'default_hooks.checkpoint.save_best=None',
             'train_dataloader.dataset.times=1',
             'train_dataloader.dataset.dataset.indices=8',
             *loader_options('train_dataloader'),
             'train_dataloader.batch_size=8',
             *loader_options('val_dataloader'),
             f'train_dataloader.dataset.dataset.pipeline.2.scale={SMALL_INPUT}',
             f'val_dataloader.dataset.pipeline.2.scale={SMALL_INPUT}')
    for config in ('resnet34_stbsm.py', 'resnet34_stbsm_external.py'):
        run_tool('tools/test.py', f'configs/stbsm/{config}',
                 work_dir / 'epoch_1.pth', '--bootstrap', '200',
                 '--cfg-options', *common,
                 *loader_options('test_dataloader'),
                 f'test_dataloader.dataset.pipeline.2.scale={SMALL_INPUT}')


@pytest.fixture(scope='module')
def tested_runs(spider_prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp('report_runs')
    work_dirs = {}
    for name, seed in MODELS.items():
        work_dirs[name] = root / f'resnet34_seed{seed}'
        train_and_test(spider_prepared, work_dirs[name], seed)
    return work_dirs


@pytest.fixture(scope='module')
def report_dir(tested_runs, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('report')
    run_tool('tools/report.py', *tested_runs.values(), '--out-dir', out_dir,
             '--names', *tested_runs)
    return out_dir


def read_json(path):
    return json.loads(Path(path).read_text(encoding='utf-8'))


def markdown_rows(text, first_cell):
    return [line for line in text.splitlines()
            if line.startswith(f'| {first_cell} |')]


def test_report_files(report_dir):
    for name in ('report.html', 'report.md', 'report.json'):
        assert (report_dir / name).is_file(), name
    report = read_json(report_dir / 'report.json')
    for plot in report['plots']:
        assert Path(plot['png']).is_file()
        assert Path(plot['svg']).is_file()
        assert Path(plot['png']).parent == report_dir / 'figures'
    ids = {plot['id'] for plot in report['plots']}
    assert {'roc_val', 'roc_external'} <= ids
    assert sum(i.startswith('confusion_') for i in ids) == 4
    assert sum(i.startswith('reliability_') for i in ids) == 4
    assert report['notes'] == []


def test_html_self_contained(report_dir):
    page = (report_dir / 'report.html').read_text(encoding='utf-8')
    assert 'http://' not in page
    assert 'https://' not in page
    assert '<script' not in page.lower()
    assert '<link' not in page.lower()
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert references
    for reference in references:
        assert reference.startswith('data:image/png;base64,'), reference[:80]
    assert 'url(' not in page


def test_html_embeds_figures(report_dir):
    page = (report_dir / 'report.html').read_text(encoding='utf-8')
    report = read_json(report_dir / 'report.json')
    embedded = [base64.b64decode(data) for data in re.findall(
        r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    on_disk = [Path(plot['png']).read_bytes() for plot in report['plots']]
    assert len(embedded) == len(report['plots'])
    assert embedded == on_disk


def test_json_equals_summary(report_dir, tested_runs):
    report = read_json(report_dir / 'report.json')
    by_name = {model['name']: model for model in report['models']}
    assert list(by_name) == list(tested_runs)
    for name, work_dir in tested_runs.items():
        for split in SPLITS:
            summary = read_json(work_dir / split / 'summary.json')
            entry = by_name[name]['splits'][split]
            assert entry['image'] == summary['image'], (name, split)
            assert entry['patient'] == summary['patient'], (name, split)
            assert entry['n_images'] == summary['n_images']
            assert entry['n_patients'] == summary['n_patients']


def test_markdown_row_per_model(report_dir, tested_runs):
    text = (report_dir / 'report.md').read_text(encoding='utf-8')
    for split in ('internal validation (val)', 'external test (external)'):
        for level in ('image', 'patient'):
            assert f'### {split}, {level} level' in text
    for name, work_dir in tested_runs.items():
        rows = markdown_rows(text, name)
        # One row per split and level in the study's table, one per split
        # in the provenance table.
        assert len(rows) == 2 * len(SPLITS) + len(SPLITS), rows
        summary = read_json(work_dir / 'external' / 'summary.json')
        accuracy = summary['image']['accuracy']
        cell = (f'{100 * accuracy["value"]:.1f} ({100 * accuracy["low"]:.1f}'
                f'-{100 * accuracy["high"]:.1f})')
        assert f'| {name} | {summary["n_images"]} | {cell} |' in text


def test_delong_between_models(report_dir, tested_runs):
    report = read_json(report_dir / 'report.json')
    tests = {test['split']: test for test in report['model_tests']}
    assert set(tests) == set(SPLITS)
    for split, test in tests.items():
        assert 'skipped' not in test, test
        assert (test['model_a'], test['model_b']) == tuple(tested_runs)
        with open(tested_runs[test['model_a']] / split / 'predictions.csv',
                  newline='') as file:
            rows = list(csv.DictReader(file))
        assert test['n_images'] == len(rows)
        positive = report['models'][0]['splits'][split]['positive_class']
        labels = [row['label'] == positive for row in rows]
        scores = [float(row[f'score_{positive}']) for row in rows]
        assert test['auc_a'] == pytest.approx(roc_auc_score(labels, scores))
        assert 0.0 <= test['p_value'] <= 1.0


def test_data_summary(report_dir, spider_prepared):
    data = read_json(report_dir / 'report.json')['data']
    manifest = read_json(spider_prepared / 'manifest.json')
    for split in ('train', 'val', 'external'):
        rois = [roi for roi in manifest['rois'] if roi['split'] == split]
        counts = data['splits'][split]
        assert counts['n_rois'] == len(rois)
        assert counts['n_patients'] == len({r['patient_id'] for r in rois})
        assert sum(counts['sites'].values()) == counts['n_patients']
        assert sum(counts['rois_per_class'].values()) == len(rois)
    assert data['splits']['external']['sites'] == {'Philips Ingenia': 4}


def test_provenance(report_dir, tested_runs, spider_prepared):
    report = read_json(report_dir / 'report.json')
    text = (report_dir / 'report.md').read_text(encoding='utf-8')
    manifest_sha = sha256_of_file(spider_prepared / 'manifest.json')
    for model in report['models']:
        work_dir = tested_runs[model['name']]
        checkpoint_sha = sha256_of_file(work_dir / 'epoch_1.pth')
        for split in SPLITS:
            record = model['splits'][split]['provenance']
            assert record['checkpoint_sha256'] == checkpoint_sha
            assert record['manifest_sha256'] == manifest_sha
            assert record['seed'] == MODELS[model['name']]
            assert record['versions']['mmpretrain'] == '1.2.0'
        assert checkpoint_sha in text
    assert manifest_sha in text
    assert 'resnet34_stbsm_external.py' in text


def load_report_tool():
    """Import tools/report.py as a module, to call its main() in-process."""
    spec = importlib.util.spec_from_file_location(
        'report_tool', REPO_ROOT / 'tools' / 'report.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_test_outputs_error(tmp_path):
    empty = tmp_path / 'untested_run'
    empty.mkdir()
    with pytest.raises(SystemExit) as raised:
        load_report_tool().main([str(empty), '--out-dir',
                                 str(tmp_path / 'report')])
    message = str(raised.value)
    assert message.startswith(f'error: work dir {empty} has no test outputs')
    assert 'tools/test.py' in message
    assert not (tmp_path / 'report' / 'report.html').exists()


def test_missing_work_dir_error(tmp_path):
    with pytest.raises(SystemExit, match='not found'):
        load_report_tool().main([str(tmp_path / 'absent'), '--out-dir',
                                 str(tmp_path / 'report')])


def test_names_mismatch(tested_runs, tmp_path):
    with pytest.raises(ReportInputError, match='2 names for 1 work dirs'):
        build_report([tested_runs['ResNet34 seed 0']], tmp_path,
                     names=['a', 'b'])
    with pytest.raises(ReportInputError, match='used twice'):
        build_report(list(tested_runs.values()), tmp_path,
                     names=['same', 'same'])


@pytest.fixture(scope='module')
def partial_report(tested_runs, tmp_path_factory):
    """A report where model B lacks val, calibration and train_run.json,
    model A has threshold.json, and readers are given."""
    root = tmp_path_factory.mktemp('partial')
    model_a = root / 'model_a'
    model_b = root / 'model_b'
    shutil.copytree(tested_runs['ResNet34 seed 0'], model_a)
    shutil.copytree(tested_runs['ResNet34 seed 1'], model_b)
    shutil.rmtree(model_b / 'val')
    (model_b / 'train_run.json').unlink()
    summary_path = model_b / 'external' / 'summary.json'
    summary = read_json(summary_path)
    summary.pop('calibration', None)
    summary_path.write_text(json.dumps(summary))
    (model_a / 'external' / 'threshold.json').write_text(json.dumps({
        'threshold': 0.4321, 'method': 'youden', 'split': 'val',
        'positive_class': 'modic', 'n_images': 15,
        'checkpoint_sha256': 'c' * 64}))

    def wilson(value):
        return {'value': value, 'low': value - 0.2, 'high': value + 0.1}

    readers = {
        'level': 'image', 'classes': ['modic', 'no_modic'],
        'positive_class': 'modic',
        'readers': [
            {'reader': 'radiologist 1', 'n': 29, 'accuracy': wilson(0.75),
             'sensitivity': wilson(0.8), 'specificity': wilson(0.65),
             'confusion_matrix': [[16, 4], [3, 6]],
             'tp': 16, 'fn': 4, 'fp': 3, 'tn': 6},
        ],
        'models': [{'name': 'model_a', 'pred_dir': str(model_a / 'external'),
                    'threshold': 0.5}],
        'mcnemar': [{'model': 'model_a', 'reader': 'radiologist 1', 'n': 29,
                     'model_correct_reader_wrong': 1,
                     'model_wrong_reader_correct': 6,
                     'statistic': 3.0, 'p_value': 0.0123,
                     'method': 'exact binomial'}],
    }
    readers_path = root / 'readers.json'
    readers_path.write_text(json.dumps(readers))

    cv_run = root / 'cv_run'
    cv_run.mkdir()
    (cv_run / 'cv_summary.json').write_text(json.dumps({
        'folds': [0, 1], 'positive_class': 'modic',
        'summary': {'accuracy': {'per_fold': [0.6, 0.8], 'mean': 0.7,
                                 'std': 0.1414, 'n_folds_used': 2,
                                 'n_folds': 2},
                    'auc': {'per_fold': [None, 0.9], 'mean': 0.9,
                            'std': None, 'n_folds_used': 1, 'n_folds': 2}},
        'pooled_out_of_fold': {'accuracy': 0.71, 'auc': 0.83}}))

    out_dir = root / 'report'
    report = build_report([model_a, model_b, cv_run], out_dir,
                          readers=readers_path)
    return report, out_dir


def test_partial_missing_split_noted(partial_report):
    report, out_dir = partial_report
    text = (out_dir / 'report.md').read_text(encoding='utf-8')
    assert any('model_b: no val results' in note for note in report['notes'])
    assert '## Missing inputs' in text
    assert 'model_b: no val results' in text
    val_table = text.split('### internal validation (val), image level')[1]
    val_table = val_table.split('###')[0]
    assert markdown_rows(val_table, 'model_a')
    assert not markdown_rows(val_table, 'model_b')
    assert report['models'][1]['training'] is None
    tests = {test['split']: test for test in report['model_tests']}
    assert set(tests) == {'external'}


def test_partial_reliability_computed(partial_report):
    report, _ = partial_report
    ids = {plot['id'] for plot in report['plots']}
    assert 'reliability_model_b_external' in ids
    assert 'reliability_model_b_val' not in ids


def test_partial_threshold_and_readers(partial_report):
    report, out_dir = partial_report
    text = (out_dir / 'report.md').read_text(encoding='utf-8')
    assert 'Youden threshold 0.4321 chosen on val' in text
    assert report['models'][0]['splits']['external']['youden_threshold'][
        'threshold'] == 0.4321
    assert markdown_rows(text, 'radiologist 1') == [
        '| radiologist 1 | 29 | 75.0 (55.0-85.0) | 80.0 (60.0-90.0) | '
        '65.0 (45.0-75.0) |']
    assert '| model_a | radiologist 1 | 29 | 1 | 6 | 3.000 | 0.012 |' in text
    svg = (out_dir / 'figures' / 'roc_external.svg').read_text()
    assert 'radiologist 1' in svg
    assert 'radiologist 1' not in (out_dir / 'figures' /
                                   'roc_val.svg').read_text()


def test_partial_cross_validation(partial_report):
    report, out_dir = partial_report
    text = (out_dir / 'report.md').read_text(encoding='utf-8')
    assert 'cv_cv_run' in {plot['id'] for plot in report['plots']}
    assert '### Cross-validation of cv_run' in text
    assert '| accuracy | 70.0 | 14.1 | 2/2 | 71.0 |' in text
    assert '| auc | 90.0 | undefined | 1/2 | 83.0 |' in text


def test_chromium_screenshot(report_dir, tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(f'{CHROMIUM} is missing: install it with '
                    '`bash tools/install_test_browser.sh` (as root).')
    screenshot = tmp_path / 'report.png'
    command = [
        str(CHROMIUM), '--headless', '--no-sandbox', '--disable-gpu',
        '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync',
        f'--user-data-dir={tmp_path / "profile"}',
        f'--screenshot={screenshot}', '--window-size=1280,2000',
        (report_dir / 'report.html').resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert screenshot.is_file(), result.stderr[-3000:]

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert('RGB'))
    assert pixels.shape[:2] == (2000, 1280)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50
    assert pixels.std() > 10
    # Text, table borders and header fills cover part of the page.
    not_white = np.any(pixels < 240, axis=2).mean()
    assert 0.02 < not_white < 0.9
