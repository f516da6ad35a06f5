"""Cut the lesion crop out of a preprocessed slice."""
import SimpleITK as sitk

from ..io.labelme import Box


def crop_lesion(image: sitk.Image, box: Box,
                square_pixels: bool = True) -> sitk.Image:
    """Crop ``box`` from a 2-D slice, optionally resampled to square pixels.

    Args:
        image: A 2-D image.
        box: ``(x0, y0, x1, y1)`` in pixels, ``x1`` and ``y1`` exclusive.
        square_pixels: Resample the crop to the finer of the two in-plane
            spacings so that one pixel covers the same distance along both
            axes. Lesion shapes then keep their true proportions when the
            crop is later resized for the network.

    Returns:
        SimpleITK.Image: the crop, with spacing and origin in patient space.

    Examples:
        >>> import numpy as np, SimpleITK as sitk
        >>> image = sitk.GetImageFromArray(np.zeros((20, 30), np.uint8))
        >>> image.SetSpacing((0.5, 1.0))
        >>> crop_lesion(image, (0, 0, 10, 4)).GetSize()
        (10, 8)
    """
    x0, y0, x1, y1 = box
    width, height = image.GetSize()
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f'box={box} is empty or outside the {width}x{height} '
                         'slice.')

    crop = sitk.RegionOfInterest(image, [x1 - x0, y1 - y0], [x0, y0])
    spacing_x, spacing_y = crop.GetSpacing()
    if not square_pixels or abs(spacing_x - spacing_y) < 1e-6 * max(
            spacing_x, spacing_y):
        return crop

    spacing = min(spacing_x, spacing_y)
    size = [
        max(1, int(round(crop.GetSize()[0] * spacing_x / spacing))),
        max(1, int(round(crop.GetSize()[1] * spacing_y / spacing)))
    ]
    # Pixel centres sit half a pixel inside the crop's edge on each grid.
    origin = crop.TransformContinuousIndexToPhysicalPoint(
        [(spacing / spacing_x - 1) / 2, (spacing / spacing_y - 1) / 2])
    return sitk.Resample(crop, size, sitk.Transform(), sitk.sitkLinear,
                         origin, [spacing, spacing], crop.GetDirection(), 0.0,
                         crop.GetPixelID())
