"""Deployment: ONNX export of a trained classifier and its preprocessing."""
from .onnx_export import (INPUT_NAME, OUTPUT_NAME, TOLERANCE,
                          SoftmaxClassifier, export_metadata, export_onnx,
                          onnx_max_difference, preprocess_crop,
                          read_onnx_metadata)

__all__ = [
    'INPUT_NAME', 'OUTPUT_NAME', 'SoftmaxClassifier', 'TOLERANCE',
    'export_metadata', 'export_onnx', 'onnx_max_difference',
    'preprocess_crop', 'read_onnx_metadata'
]
