"""N4 bias-field correction of a 2-D MR slice with SimpleITK.

The N4 algorithm (Tustison et al., "N4ITK: Improved N3 Bias Correction",
IEEE TMI 2010) fits a smooth multiplicative bias field. The fit runs on a
shrunk copy of the slice for speed. The fitted field is then evaluated at
the slice's full resolution and divided out.
"""
from typing import Optional, Sequence, Tuple

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
        mask: Optional[sitk.Image] = None,
        shrink_factor: int = 4,
        iterations: Sequence[int] = (50, 50, 30, 20),
        convergence_threshold: float = 1e-6
) -> Tuple[sitk.Image, sitk.Image]:
    """Correct the bias field of a 2-D slice with N4.

    Args:
        image: A 2-D scalar image; it is cast to float32 and must have
            positive intensities in the foreground.
        mask: The region used for the fit (uint8, 1 = fit). Defaults to
            :func:`foreground_mask`.
        shrink_factor: Down-sampling factor of the fit, per axis (1 = none).
        iterations: Maximum iterations per fitting level; the number of
            entries is the number of B-spline levels.
        convergence_threshold: N4's convergence threshold.

    Returns:
        tuple: the corrected float32 image at full resolution and the mask.

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
    if shrink_factor < 1:
        raise ValueError(f'shrink_factor={shrink_factor}; use 1 or more.')

    image = sitk.Cast(image, sitk.sitkFloat32)
    if mask is None:
        mask = foreground_mask(image)
    mask = sitk.Cast(mask, sitk.sitkUInt8)

    # Fit on a shrunk copy. No axis may shrink below a few pixels.
    factors = [
        max(1, min(shrink_factor, size // 8)) for size in image.GetSize()
    ]
    small_image = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask, factors)

    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    corrector.SetConvergenceThreshold(convergence_threshold)
    corrector.Execute(small_image, small_mask)

    # Evaluate the fitted field on the full-resolution grid and divide it out.
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    corrected = sitk.Divide(image, sitk.Exp(log_bias))
    return sitk.Cast(corrected, sitk.sitkFloat32), mask
