"""Data transforms registered in mmpretrain's ``TRANSFORMS`` registry.

Import this package before building a pipeline that names them.
"""
from .random_affine import RandomAffine

__all__ = ['RandomAffine']
