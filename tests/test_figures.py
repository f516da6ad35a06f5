"""Figures of test results: ROC, confusion matrix, reliability, CV folds."""
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from stbsm_mm.visualization import (plot_confusion_matrix, plot_cv_folds,
                                    plot_reliability_diagram, plot_roc_curves)

SVG_NAMESPACE = '{http://www.w3.org/2000/svg}'


def check_outputs(paths, stem):
    assert [path.name for path in paths] == [f'{stem.name}.png',
                                             f'{stem.name}.svg']
    png, svg = paths
    with Image.open(png) as image:
        assert image.format == 'PNG'
        pixels = np.asarray(image.convert('RGB'))
    assert pixels.shape[0] > 200
    assert pixels.shape[1] > 200
    # A drawn figure has lines and text, not one flat colour.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    root = ElementTree.parse(svg).getroot()
    assert root.tag == f'{SVG_NAMESPACE}svg'
    return svg_text(svg)


def svg_text(path):
    root = ElementTree.parse(path).getroot()
    return ' '.join(''.join(node.itertext())
                    for node in root.iter(f'{SVG_NAMESPACE}text'))


def rank_auc(labels, scores):
    """AUC as the fraction of positive-negative pairs ranked right."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    positive, negative = scores[labels], scores[~labels]
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return (greater + 0.5 * ties) / (len(positive) * len(negative))


def test_roc_two_models_readers(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    good = np.clip(0.4 * labels + 0.6 * rng.random(60), 0, 1)
    noise = rng.random(60)
    stem = tmp_path / 'roc'
    paths = plot_roc_curves(
        [{'name': 'ResNet34', 'labels': labels, 'scores': good,
          'auc_ci': (0.61, 0.88)},
         {'name': 'MViTv2', 'labels': labels, 'scores': noise}],
        stem,
        readers=[{'name': 'reader A', 'sensitivity': 0.8,
                  'specificity': {'value': 0.7, 'low': 0.5, 'high': 0.9}}])

    text = check_outputs(paths, stem)
    assert f'ResNet34: AUC {rank_auc(labels, good):.3f}' in text
    assert '95% CI 0.610-0.880' in text
    assert f'MViTv2: AUC {rank_auc(labels, noise):.3f}' in text
    assert 'reader A' in text


def test_roc_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match='shape'):
        plot_roc_curves([{'name': 'a', 'labels': [1, 0, 1],
                          'scores': [0.2, 0.3]}], tmp_path / 'roc')
    assert not (tmp_path / 'roc.png').exists()


def test_roc_one_class(tmp_path):
    with pytest.raises(ValueError, match='one class'):
        plot_roc_curves([{'name': 'a', 'labels': [1, 1],
                          'scores': [0.2, 0.3]}], tmp_path / 'roc')


def test_roc_reader_out_of_range(tmp_path):
    with pytest.raises(ValueError, match='specificity'):
        plot_roc_curves([{'name': 'a', 'labels': [1, 0],
                          'scores': [0.8, 0.3]}], tmp_path / 'roc',
                        readers=[{'name': 'r', 'sensitivity': 0.5,
                                  'specificity': 70}])


def test_roc_empty(tmp_path):
    with pytest.raises(ValueError, match='curves is empty'):
        plot_roc_curves([], tmp_path / 'roc')


def test_confusion_counts_and_fractions(tmp_path):
    stem = tmp_path / 'sub' / 'confusion'
    paths = plot_confusion_matrix([[7, 3], [1, 9]], ['STB', 'SM'], stem)

    text = check_outputs(paths, stem).split()
    for expected in ('7', '3', '1', '9', '0.70', '0.30', '0.10', '0.90',
                     'STB', 'SM'):
        assert expected in text


def test_confusion_empty_row(tmp_path):
    stem = tmp_path / 'confusion'
    paths = plot_confusion_matrix([[0, 0], [2, 3]], ['STB', 'SM'], stem)
    text = check_outputs(paths, stem).split()
    for expected in ('0.00', '0.40', '0.60'):
        assert expected in text


@pytest.mark.parametrize('matrix,names,message', [
    ([[1, 2, 3], [4, 5, 6]], ['a', 'b'], 'square'),
    ([[1, 2], [3, 4]], ['a', 'b', 'c'], 'class_names'),
    ([[1, -2], [3, 4]], ['a', 'b'], 'non-negative'),
    ([[1.5, 2], [3, 4]], ['a', 'b'], 'integer'),
])
def test_confusion_invalid(tmp_path, matrix, names, message):
    with pytest.raises(ValueError, match=message):
        plot_confusion_matrix(matrix, names, tmp_path / 'confusion')


def test_reliability_computed(tmp_path):
    rng = np.random.default_rng(5)
    scores = rng.random(200)
    labels = rng.random(200) < scores
    stem = tmp_path / 'reliability'
    paths = plot_reliability_diagram(stem, labels=labels, scores=scores,
                                     n_bins=5)

    text = check_outputs(paths, stem)
    brier = np.mean((scores - labels) ** 2)
    assert f'Brier score {brier:.3f}' in text
    counts = np.histogram(scores, bins=np.linspace(0, 1, 6))[0]
    for count in counts:
        assert f'n={count}' in text


def test_reliability_from_summary(tmp_path):
    reliability = {
        'n_bins': 4, 'strategy': 'uniform',
        'bin_edges': [0, 0.25, 0.5, 0.75, 1.0],
        'mean_predicted': [0.1, 0.6, 0.9],
        'observed_fraction': [0.2, 0.5, 0.8],
        'counts': [5, 0, 6, 9],
        'brier': 0.1234,
    }
    stem = tmp_path / 'reliability'
    text = check_outputs(plot_reliability_diagram(stem, reliability), stem)
    assert 'Brier score 0.123' in text
    for count in (5, 6, 9):
        assert f'n={count}' in text
    assert '4 uniform bins' in text


def test_reliability_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match='shape'):
        plot_reliability_diagram(tmp_path / 'r', labels=[1, 0, 1],
                                 scores=[0.4, 0.5])
    with pytest.raises(ValueError, match='pair up'):
        plot_reliability_diagram(tmp_path / 'r', {
            'mean_predicted': [0.1, 0.2], 'observed_fraction': [0.3]})


def test_reliability_invalid(tmp_path):
    with pytest.raises(ValueError, match='reliability, or both'):
        plot_reliability_diagram(tmp_path / 'r', labels=[1, 0])
    with pytest.raises(ValueError, match='probabilities'):
        plot_reliability_diagram(tmp_path / 'r', labels=[1, 0],
                                 scores=[1.5, 0.2])
    with pytest.raises(ValueError, match='strategy'):
        plot_reliability_diagram(tmp_path / 'r', labels=[1, 0],
                                 scores=[0.5, 0.2], strategy='equal')


def test_cv_folds(tmp_path):
    cv_summary = {
        'folds': [0, 1, 2],
        'summary': {
            'accuracy': {'per_fold': [0.6, 0.7, 0.8], 'mean': 0.7,
                         'std': 0.1},
            'auc': {'per_fold': [0.7, None, 0.9], 'mean': 0.8,
                    'std': 0.1414},
            'npv': {'per_fold': [0.5, 0.5, 0.5], 'mean': 0.5, 'std': 0.0},
        },
    }
    stem = tmp_path / 'cv'
    text = check_outputs(plot_cv_folds(cv_summary, stem), stem)
    assert 'accuracy' in text
    assert 'auc' in text
    # npv is not among the default figures.
    assert 'npv' not in text
    assert 'folds 0, 1, 2' in text


def test_cv_folds_no_figures(tmp_path):
    with pytest.raises(ValueError, match='contains none of the figures'):
        plot_cv_folds({'summary': {'npv': {'per_fold': [0.5]}}},
                      tmp_path / 'cv')
