"""Run trained models on a new patient's slice (``stbsm-infer``)."""
from .errors import InferenceError
from .models import TrainedModel, load_trained_model, resolve_checkpoint
from .predict import PatientPrediction, predict_patient
from .preprocess import (PreparedRoi, PreparedSlice, RoiInput,
                         check_same_preprocessing, load_roi_inputs,
                         prepare_patient_slice, preprocess_config_from_record)
from .report import RESEARCH_NOTICE, build_summary, write_outputs

__all__ = [
    'InferenceError', 'PatientPrediction', 'PreparedRoi', 'PreparedSlice',
    'RESEARCH_NOTICE', 'RoiInput', 'TrainedModel', 'build_summary',
    'check_same_preprocessing', 'load_roi_inputs', 'load_trained_model',
    'predict_patient', 'prepare_patient_slice',
    'preprocess_config_from_record', 'resolve_checkpoint', 'write_outputs'
]
