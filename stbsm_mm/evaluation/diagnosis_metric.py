"""MMEngine metric that scores the STB vs SM diagnosis of each ROI."""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpretrain.registry import METRICS

from stbsm_mm.classes import DEFAULT_CLASSES

from .binary_figures import (SCORE_PREFIX, compute_binary_figures,
                             predict_labels, validate_threshold,
                             write_metrics_json, write_predictions_csv)

#: Figures returned to MMEngine, in order. ``accuracy`` comes first because
#: ``CheckpointHook(save_best='auto')`` picks the first returned key.
SCALAR_FIGURES = ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1',
                  'macro_precision', 'macro_sensitivity', 'macro_f1', 'auc')

#: Metainfo keys of a data sample that are copied to ``predictions.csv``.
METAINFO_KEYS = ('roi_id', 'patient_id', 'site')


@METRICS.register_module()
class DiagnosisMetric(BaseMetric):
    """Accuracy, sensitivity, specificity, F1 and AUC of a two-class diagnosis.

    Each image is called the positive class when its positive-class score is
    at or above ``threshold``. The figures come from
    :func:`~stbsm_mm.evaluation.binary_figures.compute_binary_figures`:
    precision, sensitivity and F1 belong to the positive class, and
    ``macro_*`` figures are unweighted means over both classes. Class names
    come from ``dataset_meta['classes']``, which MMEngine copies from the
    dataset's metainfo.

    With ``output_dir`` set, ``compute_metrics`` also writes
    ``predictions.csv`` (one row per image) and ``metrics.json`` (all
    figures, with ``None`` for an undefined one) to that folder.

    NOTE: A figure that is undefined on the evaluated images, e.g. AUC when
    only one class is present, is left out of the returned dict because
    MMEngine's logger and ``CheckpointHook`` cannot compare ``None``. A
    ``save_best`` key that names such a figure then raises ``KeyError`` in
    ``CheckpointHook``.

    Args:
        positive_class (str | int): Name or index of the class that counts as
            positive. Defaults to 0, which is STB in
            :data:`~stbsm_mm.classes.DEFAULT_CLASSES`.
        threshold (float): Positive-class score at or above which an image is
            called positive, in [0, 1]. Defaults to 0.5.
        output_dir (str, optional): Folder for ``predictions.csv`` and
            ``metrics.json``. It is created if missing. Defaults to None,
            which writes no files.
        collect_device (str): Device that collects results from all ranks in
            distributed evaluation, ``'cpu'`` or ``'gpu'``. Defaults to
            ``'cpu'``.
        prefix (str, optional): Prefix of the returned metric names, e.g.
            ``diagnosis/accuracy``. Defaults to ``'diagnosis'``.

    Examples:
        >>> import torch
        >>> import stbsm_mm.evaluation
        >>> from mmpretrain.registry import METRICS
        >>> from mmpretrain.structures import DataSample
        >>> metric = METRICS.build(
        ...     dict(type='DiagnosisMetric', positive_class='STB'))
        >>> metric.dataset_meta = {'classes': ('STB', 'SM')}
        >>> rows = [(0, [0.9, 0.1]), (0, [0.3, 0.7]), (1, [0.2, 0.8]),
        ...         (1, [0.4, 0.6])]
        >>> samples = []
        >>> for index, (label, score) in enumerate(rows):
        ...     sample = DataSample(metainfo=dict(roi_id=f'roi{index}'))
        ...     sample = sample.set_gt_label(label)
        ...     sample = sample.set_pred_score(torch.tensor(score))
        ...     samples.append(sample.to_dict())
        >>> metric.process(None, samples)
        >>> figures = metric.compute_metrics(metric.results)  # also logs them
        >>> figures['sensitivity'], figures['specificity']
        (0.5, 1.0)
        >>> figures['confusion_matrix']
        [[1, 1], [0, 2]]
    """

    default_prefix: str | None = 'diagnosis'

    def __init__(self,
                 positive_class: str | int = 0,
                 threshold: float = 0.5,
                 output_dir: str | None = None,
                 collect_device: str = 'cpu',
                 prefix: str | None = 'diagnosis') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)

        # A class name can only be checked against dataset_meta, which is
        # set after construction, so compute_metrics checks it again.
        is_index = (isinstance(positive_class, numbers.Integral)
                    and not isinstance(positive_class, bool))
        if not isinstance(positive_class, str) and not (
                is_index and positive_class in (0, 1)):
            raise ValueError(
                f'positive_class must be a class name or the index 0 or 1, '
                f'got {positive_class!r}.')

        self.positive_class = positive_class
        self.threshold = validate_threshold(threshold)
        self.output_dir = output_dir

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Store the label, class scores and ROI ids of each image.

        Args:
            data_batch (Any): The batch from the dataloader. It is not used.
            data_samples (Sequence[dict]): Outputs of the model as
                ``DataSample.to_dict()``, each with ``pred_score`` (class
                probabilities), ``gt_label`` (one class index) and optional
                ``roi_id``, ``patient_id`` and ``site`` metainfo.
        """
        for position, data_sample in enumerate(data_samples):
            for key in ('pred_score', 'gt_label'):
                if key not in data_sample:
                    raise ValueError(
                        f'data_samples[{position}] has no {key!r}, got keys '
                        f'{sorted(data_sample)}. Run the model in predict '
                        f'mode on a dataset with labels.')

            scores = _to_numpy(data_sample['pred_score']).astype(np.float64)
            gt_label = _to_numpy(data_sample['gt_label']).reshape(-1)
            if gt_label.size != 1:
                raise ValueError(
                    f'data_samples[{position}]["gt_label"] must contain one '
                    f'class index, got {gt_label.tolist()}.')

            result = {
                'label_index': int(gt_label[0]),
                'scores': scores.reshape(-1).tolist(),
            }
            for key in METAINFO_KEYS:
                result[key] = data_sample.get(key)
            self.results.append(result)

    def compute_metrics(self, results: list) -> dict[str, Any]:
        """Compute the figures, write the optional files and log them.

        Args:
            results (list): The dicts stored by :meth:`process` on all ranks.

        Returns:
            dict[str, Any]: The defined figures of ``SCALAR_FIGURES`` as
            floats, ``confusion_matrix`` as nested lists (rows are true
            classes, columns predicted classes) and ``positive_class`` as a
            name.
        """
        logger = MMLogger.get_current_instance()

        classes = self._read_classes(logger)
        labels = np.array([result['label_index'] for result in results])
        scores = np.array([result['scores'] for result in results])
        figures = compute_binary_figures(labels, scores, classes,
                                         self.positive_class, self.threshold)

        if self.output_dir is not None:
            self._write_outputs(results, labels, scores, figures, logger)

        logger.info(_describe_figures(figures))

        metrics: dict[str, Any] = {}
        for name in SCALAR_FIGURES:
            if figures[name] is not None:
                metrics[name] = float(figures[name])
        metrics['confusion_matrix'] = figures['confusion_matrix']
        metrics['positive_class'] = figures['positive_class']
        return metrics

    def _read_classes(self, logger: MMLogger) -> tuple[str, ...]:
        classes = (self.dataset_meta or {}).get('classes')
        if classes is None:
            logger.warning(
                f'DiagnosisMetric found no "classes" in dataset_meta, so it '
                f'assumes the class order {DEFAULT_CLASSES}. Set "classes" in '
                f'the dataset metainfo if the order differs.')
            classes = DEFAULT_CLASSES
        return tuple(classes)

    def _write_outputs(self, results: list, labels: np.ndarray,
                       scores: np.ndarray, figures: dict[str, Any],
                       logger: MMLogger) -> None:
        output_dir = Path(self.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        classes = figures['classes']

        predictions = predict_labels(scores, figures['positive_index'],
                                     figures['threshold'])
        records = []
        for result, label, row, prediction in zip(results, labels, scores,
                                                  predictions):
            record = {key: result[key] for key in METAINFO_KEYS}
            record['label'] = classes[label]
            record['label_index'] = int(label)
            for name, score in zip(classes, row):
                record[SCORE_PREFIX + name] = float(score)
            record['pred_label'] = classes[prediction]
            records.append(record)

        csv_path = write_predictions_csv(output_dir / 'predictions.csv',
                                         records)
        json_path = write_metrics_json(output_dir / 'metrics.json', figures)
        logger.info(f'DiagnosisMetric wrote {csv_path} and {json_path}.')


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _describe_figures(figures: dict[str, Any]) -> str:
    parts = []
    for name in SCALAR_FIGURES[:-1] + ('npv', ):
        value = figures[name]
        parts.append(f'{name} {value:.4f}' if value is not None else
                     f'{name} undefined')
    if figures['auc'] is None:
        parts.append(f'auc undefined ({figures["auc_undefined_reason"]})')
    else:
        parts.append(f'auc {figures["auc"]:.4f}')

    return (f'Diagnosis figures on {figures["n_images"]} images with positive '
            f'class {figures["positive_class"]} at threshold '
            f'{figures["threshold"]}: {", ".join(parts)}. Confusion matrix '
            f'(rows true, columns predicted, order {figures["classes"]}): '
            f'{figures["confusion_matrix"]}.')
