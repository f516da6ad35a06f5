"""stbsm-mm: spinal tuberculosis versus spinal metastasis on T2-weighted MRI.

Importing the package registers its dataset, transform and metric in
MMPreTrain's registries, its runner in MMEngine's, and its checkpoint loader
with MMEngine's ``CheckpointLoader``.
"""
from . import datasets, engine, evaluation, transforms  # noqa: F401
from .classes import DEFAULT_CLASSES
from .version import __version__

__all__ = ['DEFAULT_CLASSES', '__version__']
