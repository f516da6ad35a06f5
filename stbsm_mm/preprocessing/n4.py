"""N4 bias-field correction of a 2-D MR slice with SimpleITK.

The N4 algorithm (Tustison et al., "N4ITK: Improved N3 Bias Correction",
IEEE TMI 2010) fits a smooth multiplicative bias field. The fit runs on a
shrunk copy of the slice for speed. The fitted field is then evaluated at
the slice's full resolution and divided out.
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk


def foreground_mask(image: sitk.Image,
                    fraction: float = 0.1) -> sitk.Image:
    """Return a uint8 mask of the body, holes filled.

    A pixel is foreground when it exceeds the 2nd percentile by ``fraction``
    of the robust range (2nd to 98th percentile), the initial threshold of
    FSL's brain extraction tool (Smith, "Fast robust automated brain
    extraction", HBM 2002). Otsu's threshold is not used because on slices
    with bright subcutaneous fat it keeps only the fat and drops the
    vertebrae.

    Args:
        image: A 2-D scalar image.
        fraction: Fraction of the robust range above the 2nd percentile.

    Returns:
        SimpleITK.Image: 1 inside the body, 0 in the background air.
    """
    values = sitk.GetArrayViewFromImage(image)
    low, high = np.percentile(values, [2, 98])
    threshold = float(low + fraction * (high - low))
    mask = sitk.Cast(image > threshold, sitk.sitkUInt8)
    mask = sitk.BinaryFillhole(mask, fullyConnected=False, foregroundValue=1)
    if sitk.GetArrayViewFromImage(mask).sum() == 0:
        # A flat image: treat every pixel as foreground.
        mask = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
        mask.CopyInformation(image)
    return mask


def correct_bias_field(
        image: sitk.Image,
        mask: Optional[Union[sitk.Image, np.ndarray]] = None,
        shrink_factor: int = 8,
        iterations: Sequence[int] = (50, 50, 30, 20),
        convergence_threshold: float = 1e-3
) -> Tuple[sitk.Image, sitk.Image]:
    """Correct the bias field of a 2-D slice with N4.

    N4 fits a multiplicative field to the logarithm of the intensities, so
    it needs positive values. A slice with negative values (a signed export)
    is shifted so that its minimum is 0 for the fit and the correction. The
    shift is then added back, so pixels at the minimum keep their value.

    Args:
        image: A 2-D scalar image of any pixel type; it is cast to float32.
        mask: The region used for the fit: an image or a ``(rows, columns)``
            array of the slice's size, of any type. Every non-zero pixel is
            fitted, so boolean masks, 0/255 masks and label maps all work.
            Defaults to :func:`foreground_mask`.
        shrink_factor: Down-sampling factor of the fit, per axis (1 = none);
            8 fits a 512 x 512 slice on 64 x 64 pixels.
        iterations: Maximum iterations per fitting level; the number of
            entries is the number of B-spline levels.
        convergence_threshold: N4's convergence threshold per level
            (SimpleITK's default, 0.001).

    Returns:
        tuple: the corrected float32 image at full resolution and the uint8
        mask (1 = fitted) with the image's geometry.

    Raises:
        ValueError: the image is not a 2-D scalar slice, the mask does not
            match its size or is empty, or ``shrink_factor`` is below 1.

    Examples:
        >>> import numpy as np, SimpleITK as sitk
        >>> rows, cols = np.mgrid[0:64, 0:64]
        >>> array = (100 * (1 + rows / 64)).astype(np.float32)
        >>> corrected, mask = correct_bias_field(
        ...     sitk.GetImageFromArray(array), iterations=(20, 20))
        >>> corrected.GetSize()
        (64, 64)
    """
    if image.GetDimension() != 2:
        raise ValueError(
            f'correct_bias_field expects a 2-D slice, got a '
            f'{image.GetDimension()}-D image.')
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f'correct_bias_field expects a scalar slice, got '
            f'{image.GetNumberOfComponentsPerPixel()} components per pixel; '
            'convert the image to grayscale first.')
    if shrink_factor < 1:
        raise ValueError(f'shrink_factor={shrink_factor}; use 1 or more.')

    image = sitk.Cast(image, sitk.sitkFloat32)
    if mask is None:
        mask = foreground_mask(image)
    mask = _binary_mask(mask, image)

    # Shift negative intensities so the minimum is 0.
    minimum = float(sitk.GetArrayViewFromImage(image).min())
    offset = -minimum if minimum < 0 else 0.0
    shifted = image + offset if offset else image

    # Fit on a shrunk copy. No axis may shrink below a few pixels.
    factors = [
        max(1, min(shrink_factor, size // 8)) for size in image.GetSize()
    ]
    small_image = sitk.Shrink(shifted, factors)
    small_mask = sitk.Shrink(mask, factors)

    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    corrector.SetConvergenceThreshold(convergence_threshold)
    corrector.Execute(small_image, small_mask)

    # Evaluate the fitted field on the full-resolution grid, divide it out
    # and undo the shift.
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    corrected = sitk.Divide(shifted, sitk.Exp(log_bias))
    if offset:
        corrected = corrected - offset
    return sitk.Cast(corrected, sitk.sitkFloat32), mask


def _binary_mask(mask: Union[sitk.Image, np.ndarray],
                 image: sitk.Image) -> sitk.Image:
    """Return ``mask != 0`` as a uint8 image with the geometry of ``image``."""
    if isinstance(mask, sitk.Image):
        size = mask.GetSize()
        values = sitk.GetArrayViewFromImage(mask)
    else:
        values = np.asarray(mask)
        size = tuple(reversed(values.shape))
    if tuple(size) != tuple(image.GetSize()):
        raise ValueError(
            f'mask of size {tuple(size)} (x, y) does not match the slice of '
            f'size {image.GetSize()}; give a mask of the slice\'s size.')
    if values.ndim != 2:
        raise ValueError(
            f'mask has {values.ndim} array dimensions; give one value per '
            'pixel.')

    inside = (values != 0).astype(np.uint8)
    if not inside.any():
        raise ValueError(
            'mask has no non-zero pixel, so N4 has nothing to fit. Give a '
            'mask of the body or leave mask=None.')
    binary = sitk.GetImageFromArray(inside)
    binary.CopyInformation(image)
    return binary
