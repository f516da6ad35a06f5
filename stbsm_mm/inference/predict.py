"""Classify a patient's ROI crops with each model, with Grad-CAM maps.

Each model classifies each crop. A ROI is called positive by a model when
its positive-class probability is at or above that model's threshold, and
the Grad-CAM map explains the class so predicted. The mean over models
averages the class probabilities. The patient's probabilities are the mean
over the patient's ROIs, as in the project's patient-level evaluation
(:func:`stbsm_mm.evaluation.patient_level.aggregate_by_patient`, method
``'mean'``).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.logging import MMLogger

from ..evaluation.binary_figures import (predict_labels,
                                         resolve_positive_index)
from .errors import InferenceError
from .models import TrainedModel
from .preprocess import PreparedSlice


@dataclass
class ModelOutput:
    """One model's result on one ROI.

    ``slice_overlay`` is resized to square pixels. ``cam_all_zero`` is true
    when the Grad-CAM map is zero everywhere, so the overlays show no
    region.
    """

    probabilities: np.ndarray
    predicted_index: int
    cam_index: int
    crop_overlay: np.ndarray
    slice_overlay: np.ndarray
    cam_all_zero: bool = False


@dataclass
class PatientPrediction:
    """The results of all models on all ROIs of one slice.

    Args:
        classes: Class names in probability order.
        positive_index: Index of the positive class (shared by the models).
        thresholds: Each model's threshold, by model name.
        outputs: ``outputs[roi name][model name]``.
        ensemble_threshold: Threshold applied to the mean over models, or
            ``None`` when the models' thresholds differ and none was given.
    """

    classes: Tuple[str, ...]
    positive_index: int
    thresholds: Dict[str, float]
    outputs: Dict[str, Dict[str, ModelOutput]] = field(default_factory=dict)
    ensemble_threshold: Optional[float] = None

    def predicted_class(self, probabilities: np.ndarray,
                        threshold: Optional[float]) -> Optional[str]:
        """Return the class called at ``threshold``, ``None`` without one."""
        if threshold is None:
            return None
        index = predict_labels(np.asarray(probabilities)[None],
                               self.positive_index, threshold)[0]
        return self.classes[int(index)]

    def roi_mean(self, roi: str) -> np.ndarray:
        """Return the mean over models of a ROI's class probabilities."""
        return np.mean([output.probabilities
                        for output in self.outputs[roi].values()], axis=0)

    def patient_probabilities(self, model: str) -> np.ndarray:
        """Return a model's mean over ROIs of the class probabilities."""
        return np.mean([outputs[model].probabilities
                        for outputs in self.outputs.values()], axis=0)

    def patient_mean(self) -> np.ndarray:
        """Return the mean over models and ROIs of the probabilities."""
        return np.mean([self.roi_mean(roi) for roi in self.outputs], axis=0)


def predict_patient(models: Sequence[TrainedModel],
                    prepared: PreparedSlice,
                    device: str = 'cpu',
                    target_layer: Optional[str] = None,
                    method: str = 'gradcam',
                    alpha: float = 0.4,
                    ensemble_threshold: Optional[float] = None
                    ) -> PatientPrediction:
    """Classify every ROI crop with every model and explain it.

    Args:
        models: Models from :func:`~.models.load_trained_model`, with the
            same classes and positive class.
        prepared: The slice and crops from
            :func:`~.preprocess.prepare_patient_slice`.
        device: Torch device.
        target_layer: Grad-CAM layer (default: the backbone's last feature
            layer, see
            :func:`stbsm_mm.visualization.cam.default_target_layer_name`).
        method: ``'gradcam'`` or ``'gradcam++'``.
        alpha: Weight of the colour map in the overlays.
        ensemble_threshold: Threshold for the mean over models. Defaults to
            the models' threshold when they all share one.

    Returns:
        PatientPrediction: Probabilities, predictions and overlays.

    Raises:
        InferenceError: If the models disagree on the classes or the
            positive class, or a model's class names are unknown.

    Examples:
        >>> prediction = predict_patient([model], prepared)  # doctest: +SKIP
        >>> prediction.patient_mean()  # doctest: +SKIP
        array([0.62, 0.38])
    """
    from ..visualization.cam import (CAMExplainer, overlay, place_on_slice,
                                     to_square_pixels)

    logger = MMLogger.get_current_instance()
    prediction: Optional[PatientPrediction] = None
    for model in models:
        # Build the model; its checkpoint stores the training classes.
        try:
            explainer = CAMExplainer.from_config(
                model.config, model.checkpoint, device=device,
                target_layer=target_layer, method=method)
        except ValueError as error:
            raise InferenceError(f'Model {model.name}: {error}') from error
        classes = _model_classes(model, explainer.model)
        positive_index = _positive_index(model, classes)
        if prediction is None:
            thresholds = {item.name: item.threshold for item in models}
            prediction = PatientPrediction(
                classes=classes, positive_index=positive_index,
                thresholds=thresholds,
                ensemble_threshold=_ensemble_threshold(thresholds,
                                                       ensemble_threshold))
        _check_same_classes(prediction, model, classes, positive_index)
        logger.info(f'Model {model.name}: {model.checkpoint.name}, positive '
                    f'class {classes[positive_index]} at threshold '
                    f'{model.threshold:g}, Grad-CAM layer '
                    f'{explainer.target_layer}.')

        # Classify and explain each ROI.
        try:
            for roi in prepared.rois:
                result = explainer.explain(roi.crop, positive_index)
                probabilities = np.asarray(result['scores'], dtype=np.float64)
                predicted = int(predict_labels(probabilities[None],
                                               positive_index,
                                               model.threshold)[0])
                if predicted != result['target_class']:
                    result = explainer.explain(roi.crop, predicted)
                prediction.outputs.setdefault(roi.name, {})[model.name] = (
                    ModelOutput(
                        probabilities=probabilities,
                        predicted_index=predicted,
                        cam_index=int(result['target_class']),
                        crop_overlay=overlay(roi.crop, result['cam'], alpha),
                        slice_overlay=to_square_pixels(
                            place_on_slice(prepared.image, result['cam'],
                                           roi.box, alpha),
                            prepared.spacing),
                        cam_all_zero=bool(float(result['cam'].max()) <= 0.0)))
        finally:
            explainer.close()
    return prediction


def _model_classes(model: TrainedModel, network) -> Tuple[str, ...]:
    meta = getattr(network, 'dataset_meta', None) or {}
    stored = tuple(meta.get('classes') or ())
    if model.classes and stored and tuple(model.classes) != stored:
        raise InferenceError(
            f'Model {model.name}: the checkpoint\'s classes {list(stored)} '
            f'differ from the recorded classes {list(model.classes)}; the '
            'checkpoint comes from another training run than its work_dir.')
    classes = tuple(model.classes or stored)
    if len(classes) != 2:
        raise InferenceError(
            f'Model {model.name}: expected two class names, found '
            f'{list(classes)}; pass a checkpoint written by tools/train.py.')
    return classes


def _positive_index(model: TrainedModel, classes: Tuple[str, ...]) -> int:
    try:
        return resolve_positive_index(model.positive_class, classes)
    except ValueError as error:
        raise InferenceError(f'Model {model.name} ({model.threshold_source}):'
                             f' {error}') from error


def _ensemble_threshold(thresholds: Dict[str, float],
                        requested: Optional[float]) -> Optional[float]:
    if requested is not None:
        return requested
    values = set(thresholds.values())
    return values.pop() if len(values) == 1 else None


def _check_same_classes(prediction: PatientPrediction, model: TrainedModel,
                        classes: Tuple[str, ...], positive_index: int) -> None:
    if classes != prediction.classes:
        raise InferenceError(
            f'Model {model.name} has classes {list(classes)}, but the first '
            f'model has {list(prediction.classes)}; the mean over models '
            'needs the same classes in the same order.')
    if positive_index != prediction.positive_index:
        raise InferenceError(
            f'Model {model.name} calls {classes[positive_index]} positive, '
            'but the first model calls '
            f'{prediction.classes[prediction.positive_index]} positive. '
            'Use models (or threshold files) with the same positive class.')


def patient_summary(prediction: PatientPrediction) -> dict:
    """Return the per-patient probabilities of each model and their mean."""
    models = {}
    for name, threshold in prediction.thresholds.items():
        probabilities = prediction.patient_probabilities(name)
        models[name] = _entry(prediction, probabilities, threshold)
    return {
        'aggregation': 'mean of the ROI probabilities',
        'n_rois': len(prediction.outputs),
        'models': models,
        'mean': _entry(prediction, prediction.patient_mean(),
                       prediction.ensemble_threshold),
    }


def roi_summaries(prediction: PatientPrediction) -> List[dict]:
    """Return each ROI's probabilities per model and their mean."""
    rois = []
    for roi, outputs in prediction.outputs.items():
        models = {}
        for name, output in outputs.items():
            entry = _entry(prediction, output.probabilities,
                           prediction.thresholds[name])
            entry['cam_class'] = prediction.classes[output.cam_index]
            entry['cam_all_zero'] = output.cam_all_zero
            models[name] = entry
        rois.append({
            'roi': roi,
            'models': models,
            'mean': _entry(prediction, prediction.roi_mean(roi),
                           prediction.ensemble_threshold),
        })
    return rois


def _entry(prediction: PatientPrediction, probabilities: np.ndarray,
           threshold: Optional[float]) -> dict:
    return {
        'probabilities': {
            name: float(value)
            for name, value in zip(prediction.classes, probabilities)
        },
        'threshold': threshold,
        'predicted_class': prediction.predicted_class(probabilities,
                                                      threshold),
    }
