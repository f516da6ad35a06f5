"""N4 bias correction, intensity normalisation, lesion crops, preparation."""
from .crop import crop_lesion
from .intensity import NORMALIZATION_METHODS, normalize_intensity
from .n4 import correct_bias_field, foreground_mask
from .prepare import PreprocessConfig, prepare_cohort, preprocess_slice

__all__ = [
    'NORMALIZATION_METHODS', 'PreprocessConfig', 'correct_bias_field',
    'crop_lesion', 'foreground_mask', 'normalize_intensity', 'prepare_cohort',
    'preprocess_slice'
]
