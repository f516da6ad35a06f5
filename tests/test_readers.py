"""Tests of the reader comparison: reads CSV, reader figures, McNemar.

The model outputs are small folders written here in the format of
tools/test.py. Six ROIs of four patients, STB positive, threshold 0.5:

    roi  patient  truth  STB score  model call (0.5)  model call (0.65)
    r1   p1       STB    0.9        STB  right        STB  right
    r2   p1       STB    0.3        SM   wrong        SM   wrong
    r3   p2       SM     0.2        SM   right        SM   right
    r4   p2       SM     0.6        STB  wrong        SM   right
    r5   p3       STB    0.7        STB  right        STB  right
    r6   p4       SM     0.1        SM   right        SM   right
"""
import doctest
import importlib.util
import json

import pytest

from conftest import REPO_ROOT
from stbsm_mm.evaluation import (compare_readers, compute_binary_figures,
                                 read_reads_csv, reader_figures,
                                 wilson_interval, write_metrics_json,
                                 write_predictions_csv, write_threshold_json)
from stbsm_mm.evaluation import readers as readers_module

CLASSES = ('STB', 'SM')

ROWS = [('r1', 'p1', 0, 0.9), ('r2', 'p1', 0, 0.3), ('r3', 'p2', 1, 0.2),
        ('r4', 'p2', 1, 0.6), ('r5', 'p3', 0, 0.7), ('r6', 'p4', 1, 0.1)]

# Reader A reads every ROI, reader B three of them.
READS = """roi_id,reader,call,confidence
r1,A,STB,5
r2,A,STB,4
r3,A,STB,
r4,A,SM,2
r5,A,SM,1
r6,A,SM,3
r1,B,SM,
r3,B,SM,
r6,B,SM,
"""


def write_outputs(folder, threshold=0.5, positive_class='STB'):
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for roi_id, patient_id, label_index, score in ROWS:
        records.append(dict(
            roi_id=roi_id, patient_id=patient_id, site='site-A',
            label=CLASSES[label_index], label_index=label_index,
            score_STB=score, score_SM=1.0 - score,
            pred_label=CLASSES[0 if score >= threshold else 1]))
    write_predictions_csv(folder / 'predictions.csv', records)
    figures = compute_binary_figures(
        [r[2] for r in ROWS], [[r[3], 1.0 - r[3]] for r in ROWS], CLASSES,
        positive_class, threshold=threshold)
    write_metrics_json(folder / 'metrics.json', figures)
    return folder


def write_reads(tmp_path, text, name='reads.csv'):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def model_dir(tmp_path):
    return write_outputs(tmp_path / 'resnet' / 'external')


# -------------------------------------------------------------- reads CSV


def test_reads_csv_parsed(tmp_path):
    level, reads = read_reads_csv(write_reads(tmp_path, READS), CLASSES)
    assert level == 'image'
    assert len(reads) == 9
    assert reads[0] == {'reader': 'A', 'id': 'r1', 'call': 'STB',
                        'confidence': 5.0, 'line': 2}
    assert reads[2]['confidence'] is None
    assert reads[-1]['line'] == 10


def test_reads_csv_patient_level(tmp_path):
    path = write_reads(tmp_path, 'patient_id,reader,call\np1,A,SM\n')
    level, reads = read_reads_csv(path, CLASSES)
    assert level == 'patient'
    assert reads[0]['id'] == 'p1'


@pytest.mark.parametrize('text, message', [
    ('roi_id,reader,call\nr1,A,TB\n',
     r"line 2: call 'TB' is not a class name. Use one of \['STB', 'SM'\]"),
    ('roi_id,reader,call\nr1,A,STB\nr2,A,SM\nr1,A,SM\n',
     "line 4: reader 'A' read roi_id 'r1' already on line 2"),
    ('roi_id,reader\nr1,A\n', r"lacks the columns \['call'\]"),
    ('reader,call\nA,STB\n', 'contains neither of roi_id and patient_id'),
    ('roi_id,patient_id,reader,call\nr1,p1,A,STB\n',
     'contains both of roi_id and patient_id'),
    ('roi_id,reader,call,confidence\nr1,A,STB,high\n',
     "line 2: confidence 'high' is not a finite number"),
    ('roi_id,reader,call\nr1,,STB\n', 'line 2: the reader cell is empty'),
    ('roi_id,reader,call\n', 'contains a header but no reads'),
])
def test_reads_csv_invalid(tmp_path, text, message):
    path = write_reads(tmp_path, text)
    with pytest.raises(ValueError, match=message) as error:
        read_reads_csv(path, CLASSES)
    assert str(path) in str(error.value)


def test_reads_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        read_reads_csv(tmp_path / 'none.csv', CLASSES)


# --------------------------------------------------------- reader figures


def test_reader_figures_hand_case():
    # Reader A above: true STB called STB, STB, SM; true SM called STB,
    # SM, SM.
    truth = ['STB', 'STB', 'SM', 'SM', 'STB', 'SM']
    calls = ['STB', 'STB', 'STB', 'SM', 'SM', 'SM']
    result = reader_figures(truth, calls, CLASSES, 'STB')
    assert result['n'] == 6
    assert result['confusion_matrix'] == [[2, 1], [1, 2]]
    assert (result['tp'], result['fn'], result['fp'], result['tn']) == (
        2, 1, 1, 2)
    assert result['accuracy']['value'] == pytest.approx(4 / 6)
    assert result['sensitivity']['value'] == pytest.approx(2 / 3)
    assert result['specificity']['value'] == pytest.approx(2 / 3)
    low, high = wilson_interval(4, 6)
    assert result['accuracy']['low'] == low
    assert result['accuracy']['high'] == high


def test_reader_figures_positive_sm():
    truth = ['STB', 'SM', 'SM']
    calls = ['SM', 'SM', 'STB']
    result = reader_figures(truth, calls, CLASSES, 'SM')
    # Rows and columns stay in class order; only tp..tn follow the
    # positive class.
    assert result['confusion_matrix'] == [[0, 1], [1, 1]]
    assert (result['tp'], result['fn'], result['fp'], result['tn']) == (
        1, 1, 1, 0)
    assert result['specificity']['value'] == 0.0


def test_reader_figures_one_class():
    result = reader_figures(['SM', 'SM'], ['SM', 'STB'], CLASSES, 'STB')
    assert result['sensitivity'] == {'value': None, 'low': None,
                                     'high': None}
    assert result['specificity']['value'] == 0.5


def test_reader_figures_unknown_name():
    with pytest.raises(ValueError, match=r"calls contains \['TB'\]"):
        reader_figures(['STB'], ['TB'], CLASSES, 'STB')


# ------------------------------------------------------------- comparison


def test_compare_image_level(tmp_path, model_dir):
    result = compare_readers(write_reads(tmp_path, READS), [model_dir])
    assert result['level'] == 'image'
    assert result['classes'] == ['STB', 'SM']
    assert result['positive_class'] == 'STB'
    assert result['models'] == [{'name': 'resnet/external',
                                 'pred_dir': str(model_dir),
                                 'threshold': 0.5}]

    reader_a, reader_b = result['readers']
    assert reader_a['reader'] == 'A'
    assert reader_a['confusion_matrix'] == [[2, 1], [1, 2]]
    assert reader_b['n'] == 3
    assert reader_b['confusion_matrix'] == [[0, 1], [0, 2]]
    assert reader_b['sensitivity']['value'] == 0.0
    assert reader_b['specificity']['value'] == 1.0

    # Model right and A wrong: r3, r5. Model wrong and A right: r2, r4.
    test_a, test_b = result['mcnemar']
    assert (test_a['model'], test_a['reader'], test_a['n']) == (
        'resnet/external', 'A', 6)
    assert test_a['model_correct_reader_wrong'] == 2
    assert test_a['model_wrong_reader_correct'] == 2
    assert test_a['p_value'] == pytest.approx(1.0)
    assert test_a['method'] == 'exact binomial'
    # B read r1 (B wrong, model right), r3 and r6 (both right).
    assert test_b['n'] == 3
    assert test_b['model_correct_reader_wrong'] == 1
    assert test_b['model_wrong_reader_correct'] == 0
    json.dumps(result, allow_nan=False)


def test_compare_two_models(tmp_path, model_dir):
    strict = write_outputs(tmp_path / 'strict' / 'external', threshold=0.65)
    result = compare_readers(write_reads(tmp_path, READS),
                             [model_dir, strict], names=['half', 'strict'])
    assert [model['threshold'] for model in result['models']] == [0.5, 0.65]
    tests = {(t['model'], t['reader']): t for t in result['mcnemar']}
    assert len(tests) == 4
    # At 0.65 the model gets r4 right: A is wrong on r3 and r5, right on r2.
    assert tests['strict', 'A']['model_correct_reader_wrong'] == 2
    assert tests['strict', 'A']['model_wrong_reader_correct'] == 1
    assert tests['half', 'A']['model_wrong_reader_correct'] == 2


def test_compare_patient_level(tmp_path, model_dir):
    # Mean STB scores: p1 0.6, p2 0.4, p3 0.7, p4 0.1, so the model calls
    # every patient right. The reader is wrong on p1 and p4.
    reads = write_reads(tmp_path, 'patient_id,reader,call\np1,R,SM\n'
                        'p2,R,SM\np3,R,STB\np4,R,STB\n')
    result = compare_readers(reads, [model_dir])
    assert result['level'] == 'patient'
    assert result['readers'][0]['confusion_matrix'] == [[1, 1], [1, 1]]
    test = result['mcnemar'][0]
    assert test['model_correct_reader_wrong'] == 2
    assert test['model_wrong_reader_correct'] == 0


def test_compare_patient_labels_set_truth(tmp_path, model_dir):
    reads = write_reads(tmp_path, 'patient_id,reader,call\np2,R,SM\n')
    labels = {'p1': 'STB', 'p2': 'STB', 'p3': 'STB', 'p4': 'SM'}
    result = compare_readers(reads, [model_dir], patient_labels=labels)
    assert result['readers'][0]['confusion_matrix'] == [[0, 1], [0, 0]]


def test_compare_mixed_patient_needs_labels(tmp_path):
    folder = tmp_path / 'mixed'
    write_outputs(folder)
    rows = (folder / 'predictions.csv').read_text().replace(
        'r3,p2,site-A,SM,1', 'r3,p1,site-A,SM,1')
    (folder / 'predictions.csv').write_text(rows)
    reads = write_reads(tmp_path, 'patient_id,reader,call\np1,R,SM\n')
    with pytest.raises(ValueError, match='pass --data-root'):
        compare_readers(reads, [folder])


def test_compare_unknown_id(tmp_path, model_dir):
    reads = write_reads(tmp_path, 'roi_id,reader,call\nr1,A,STB\nr9,A,SM\n')
    with pytest.raises(ValueError,
                       match="line 3: roi_id 'r9' is not in the predictions "
                       'of model resnet/external'):
        compare_readers(reads, [model_dir])


def test_compare_threshold_file_mismatch(tmp_path, model_dir):
    write_threshold_json(model_dir / 'threshold.json', 0.3, 'val', 'STB', 6,
                         'ab' * 32)
    with pytest.raises(ValueError, match='gives the threshold 0.3'):
        compare_readers(write_reads(tmp_path, READS), [model_dir])


def test_compare_positive_class_differs(tmp_path, model_dir):
    other = write_outputs(tmp_path / 'other', positive_class='SM')
    with pytest.raises(ValueError, match='has positive_class'):
        compare_readers(write_reads(tmp_path, READS), [model_dir, other])


def test_compare_names_count(tmp_path, model_dir):
    with pytest.raises(ValueError, match='one name per prediction folder'):
        compare_readers(write_reads(tmp_path, READS), [model_dir],
                        names=['a', 'b'])


def test_compare_missing_metrics(tmp_path, model_dir):
    (model_dir / 'metrics.json').unlink()
    with pytest.raises(FileNotFoundError, match='metrics.json not found'):
        compare_readers(write_reads(tmp_path, READS), [model_dir])


# -------------------------------------------------------------------- CLI
# The CLI runs in this process; tests/test_pipeline_real.py runs it as a
# subprocess on a real test output.


def run_cli(*args):
    spec = importlib.util.spec_from_file_location(
        'compare_readers_tool', REPO_ROOT / 'tools' / 'compare_readers.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(arg) for arg in args])


def test_cli_writes_outputs(tmp_path, model_dir):
    reads = write_reads(tmp_path, READS)
    out_dir = tmp_path / 'out'
    run_cli(reads, model_dir, '--names', 'resnet34', '--out-dir', out_dir)
    result = json.loads((out_dir / 'readers.json').read_text())
    assert set(result) == {'level', 'classes', 'positive_class', 'readers',
                           'models', 'mcnemar'}
    assert result['models'][0]['name'] == 'resnet34'
    assert result['readers'][0]['tp'] == 2
    markdown = (out_dir / 'readers.md').read_text()
    assert '| A | 6 | 66.7 (' in markdown
    assert '| resnet34 | B | 3 | 1 | 0 |' in markdown


def test_cli_reports_bad_call(tmp_path, model_dir):
    reads = write_reads(tmp_path, 'roi_id,reader,call\nr1,A,tb\n')
    with pytest.raises(SystemExit) as error:
        run_cli(reads, model_dir, '--out-dir', tmp_path / 'out')
    assert str(error.value).startswith('error: ')
    assert "line 2: call 'tb' is not a class name" in str(error.value)
    assert not (tmp_path / 'out').exists()


def test_cli_data_root_without_patients(tmp_path, model_dir):
    reads = write_reads(tmp_path, 'patient_id,reader,call\np1,R,SM\n')
    with pytest.raises(SystemExit, match='splits/patients.csv not found'):
        run_cli(reads, model_dir, '--out-dir', tmp_path / 'out',
                '--data-root', tmp_path / 'unprepared')


def test_cli_data_root_labels(tmp_path, model_dir):
    (tmp_path / 'prepared' / 'splits').mkdir(parents=True)
    (tmp_path / 'prepared' / 'splits' / 'patients.csv').write_text(
        'patient_id,label,split\np1,STB,external\np2,STB,external\n'
        'p3,STB,external\np4,SM,external\n')
    reads = write_reads(tmp_path, 'patient_id,reader,call\np2,R,SM\n')
    run_cli(reads, model_dir, '--out-dir', tmp_path / 'out', '--data-root',
            tmp_path / 'prepared')
    result = json.loads((tmp_path / 'out' / 'readers.json').read_text())
    # patients.csv makes p2 an STB patient, so the SM call is a false
    # negative.
    assert result['readers'][0]['fn'] == 1


def test_module_examples():
    result = doctest.testmod(readers_module)
    assert result.failed == 0
    assert result.attempted > 0
