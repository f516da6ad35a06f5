"""Grad-CAM maps of the classifiers, drawn on lesion crops and slices."""
from .cam import (CAMExplainer, TokenGridTracker, default_target_layer_name,
                  overlay, place_on_slice, resolve_layer)

__all__ = [
    'CAMExplainer', 'TokenGridTracker', 'default_target_layer_name',
    'overlay', 'place_on_slice', 'resolve_layer'
]
