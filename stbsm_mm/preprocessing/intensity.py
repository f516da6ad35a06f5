"""Intensity normalisation of a bias-corrected MR slice.

MR intensities have no absolute unit, so each slice is mapped to 0..255 from
robust statistics of its foreground: percentiles (the default), or mean and
standard deviation (z-score, mapped from -3 SD..+3 SD).
"""
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

NORMALIZATION_METHODS = ('percentile', 'zscore')


def normalize_intensity(image: sitk.Image,
                        mask: Optional[Union[sitk.Image, np.ndarray]] = None,
                        method: str = 'percentile',
                        low_percentile: float = 0.5,
                        high_percentile: float = 99.5) -> sitk.Image:
    """Map the foreground intensities of a slice to 0..255 (uint8).

    Negative intensities (signed exports) need no special handling,
    because the window comes from the slice's own statistics.

    Args:
        image: A 2-D scalar image of any pixel type, all values finite.
        mask: Foreground mask (non-zero = foreground) that supplies the
            statistics: an image or a ``(rows, columns)`` array of the
            slice's size, of any type. ``None``, or a mask without non-zero
            pixels, uses every pixel.
        method: ``'percentile'`` maps ``low_percentile``..``high_percentile``
            to 0..255; ``'zscore'`` maps mean - 3 SD..mean + 3 SD.
        low_percentile: Lower percentile, in percent.
        high_percentile: Upper percentile, in percent.

    Returns:
        SimpleITK.Image: a uint8 image with the input's spacing and origin.

    Raises:
        ValueError: an argument is invalid, the mask does not match the
            slice's size, or the slice contains NaN or infinite values.

    Examples:
        >>> import numpy as np, SimpleITK as sitk
        >>> image = sitk.GetImageFromArray(
        ...     np.arange(100, dtype=np.float32).reshape(10, 10))
        >>> array = sitk.GetArrayFromImage(normalize_intensity(image))
        >>> int(array.min()), int(array.max())
        (0, 255)
    """
    if method not in NORMALIZATION_METHODS:
        raise ValueError(f'method={method!r}; use one of '
                         f'{NORMALIZATION_METHODS}.')
    if not 0 <= low_percentile < high_percentile <= 100:
        raise ValueError(
            f'low_percentile={low_percentile}, high_percentile='
            f'{high_percentile}; need 0 <= low < high <= 100.')

    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise ValueError(
            f'the slice contains {int(np.count_nonzero(~np.isfinite(values)))}'
            ' NaN or infinite pixels; replace them before normalising.')
    if mask is not None:
        if isinstance(mask, sitk.Image):
            inside = sitk.GetArrayFromImage(mask) != 0
        else:
            inside = np.asarray(mask) != 0
        if inside.shape != values.shape:
            raise ValueError(
                f'mask of shape {inside.shape} (rows, columns) does not match '
                f'the slice of shape {values.shape}; give a mask of the '
                "slice's size.")
        if inside.any():
            values = values[inside]
    values = np.asarray(values, dtype=np.float64).ravel()

    if method == 'percentile':
        low, high = np.percentile(values, [low_percentile, high_percentile])
    else:
        mean, std = float(values.mean()), float(values.std())
        low, high = mean - 3 * std, mean + 3 * std
    if not high > low:
        # A flat slice: any window maps it to one grey value.
        high = low + 1.0

    window = sitk.IntensityWindowing(
        sitk.Cast(image, sitk.sitkFloat32), float(low), float(high), 0.0,
        255.0)
    return sitk.Cast(sitk.Round(window), sitk.sitkUInt8)
