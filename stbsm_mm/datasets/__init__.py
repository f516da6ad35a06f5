"""Datasets registered in MMPreTrain's DATASETS registry."""
from .t2_crop_dataset import T2CropDataset

__all__ = ['T2CropDataset']
