"""Grad-CAM maps on lesion crops and slices, and figures of test results."""
from .cam import (CAMExplainer, TokenGridTracker, default_target_layer_name,
                  overlay, place_on_slice, resolve_layer)
from .figures import (plot_confusion_matrix, plot_cv_folds,
                      plot_reliability_diagram, plot_roc_curves)

__all__ = [
    'CAMExplainer', 'TokenGridTracker', 'default_target_layer_name',
    'overlay', 'place_on_slice', 'resolve_layer', 'plot_confusion_matrix',
    'plot_cv_folds', 'plot_reliability_diagram', 'plot_roc_curves'
]
