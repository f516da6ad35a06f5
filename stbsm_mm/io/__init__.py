"""Readers of MR slices and Labelme lesion outlines."""
from .image import DEFAULT_MAX_PIXELS, SliceReadError, read_slice
from .labelme import (Box, LabelmeAnnotation, LabelmeError, LabelmeShape,
                      check_image_size, expand_box, labelme_image,
                      lesion_box, load_labelme, shape_mask)

__all__ = [
    'DEFAULT_MAX_PIXELS', 'Box', 'LabelmeAnnotation', 'LabelmeError',
    'LabelmeShape', 'SliceReadError', 'check_image_size', 'expand_box',
    'labelme_image', 'lesion_box', 'load_labelme', 'read_slice', 'shape_mask'
]
