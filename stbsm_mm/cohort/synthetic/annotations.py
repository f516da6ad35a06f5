"""Labelme shapes of the lesion ROIs and of the spine anatomy of a slice."""
from __future__ import annotations

import cv2
import numpy as np

from .anatomy import _SpineLayout
from .render import _LesionOutline

LABELME_VERSION = '5.4.1'


def _labelme(shapes: list[dict], image_path: str, height: int,
             width: int) -> dict:
    return {
        'version': LABELME_VERSION,
        'flags': {},
        'shapes': shapes,
        'imagePath': image_path,
        'imageData': None,
        'imageHeight': height,
        'imageWidth': width,
    }


def _labelme_shape(label: str, points: np.ndarray, shape_type: str,
                   description: str = '') -> dict:
    return {
        'label': label,
        'points': [[round(float(x), 1), round(float(y), 1)]
                   for x, y in np.asarray(points).reshape(-1, 2)],
        'group_id': None,
        'description': description,
        'shape_type': shape_type,
        'flags': {},
        'mask': None,
    }


def _lesion_shapes(lesion: _LesionOutline, roi_number: int, height: int,
                   width: int) -> list[dict]:
    """Outline a lesion ROI as Labelme shapes labelled ``lesion``.

    The main outline is a polygon, except every sixth ROI of the cohort is a
    rectangle and every ninth a circle, so readers of all three shape types
    get exercised. A second region, when present, is a smaller polygon.
    """
    contour = _largest_contour(lesion.main)
    if roi_number % 6 == 1:
        shape_type = 'rectangle'
    elif roi_number % 9 == 3:
        shape_type = 'circle'
    else:
        shape_type = 'polygon'

    main = None
    if shape_type == 'rectangle':
        low = contour.min(axis=0)
        high = contour.max(axis=0)
        main = _labelme_shape('lesion', np.stack([low, high]), 'rectangle')
    elif shape_type == 'circle':
        (cx, cy), radius = cv2.minEnclosingCircle(
            contour.astype(np.float32).reshape(-1, 1, 2))
        for dx, dy in ((radius, 0.0), (-radius, 0.0), (0.0, radius),
                       (0.0, -radius)):
            x, y = cx + dx, cy + dy
            if 0.0 <= x <= width - 1 and 0.0 <= y <= height - 1:
                main = _labelme_shape('lesion', [[cx, cy], [x, y]], 'circle')
                break
    if main is None:
        main = _labelme_shape('lesion', _simplify(contour), 'polygon')

    shapes = [main]
    if lesion.extra is not None:
        extra = _largest_contour(lesion.extra)
        if len(extra) >= 3:
            shapes.append(_labelme_shape('lesion', _simplify(extra),
                                         'polygon'))
    return shapes


def _largest_contour(mask: np.ndarray) -> np.ndarray:
    """Outer boundary pixels (x, y) of the largest region of a mask."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise RuntimeError('A lesion mask is empty; this is a bug in the '
                           'lesion geometry.')
    largest = max(contours, key=cv2.contourArea)
    return largest.reshape(-1, 2).astype(np.float64)


def _simplify(contour: np.ndarray, epsilon: float = 0.6) -> np.ndarray:
    """Drop polygon vertices within ``epsilon`` pixels of the outline."""
    simplified = cv2.approxPolyDP(contour.astype(np.float32).reshape(-1, 1, 2),
                                  epsilon, True).reshape(-1, 2)
    return simplified if len(simplified) >= 3 else contour


def _anatomy_shapes(layout: _SpineLayout) -> list[dict]:
    """Vertebrae, discs, pedicles and canal as Labelme polygons in view.

    Numbering runs from the bottom: ``vertebra_1`` is the lowest body in
    view, ``disc_k`` lies directly above ``vertebra_k``, and ``pedicle_k``
    belongs to ``vertebra_k``. Outlines are clipped to the image.
    """
    height, width = layout.image_size

    def in_view(outline_mm: np.ndarray) -> np.ndarray:
        pixels = _simplify(layout.to_pixels(outline_mm), epsilon=0.25)
        return _clip_polygon(pixels, width - 1.0, height - 1.0)

    bodies = [in_view(vertebra.outline) for vertebra in layout.vertebrae]
    bottom_up = [index for index in reversed(range(len(bodies)))
                 if len(bodies[index]) >= 3]
    numbers = {index: number
               for number, index in enumerate(bottom_up, start=1)}

    shapes = [_labelme_shape(f'vertebra_{number}', bodies[index], 'polygon',
                             'vertebral body')
              for index, number in numbers.items()]
    for index, number in numbers.items():
        disc = in_view(layout.discs[index - 1]) if index > 0 else []
        if len(disc) >= 3:
            shapes.append(_labelme_shape(f'disc_{number}', disc, 'polygon',
                                         'intervertebral disc'))
    for index, number in numbers.items():
        pedicle = in_view(layout.pedicles[index])
        if len(pedicle) >= 3:
            shapes.append(_labelme_shape(f'pedicle_{number}', pedicle,
                                         'polygon', 'pedicle'))
    canal = in_view(layout.canal)
    if len(canal) >= 3:
        shapes.append(_labelme_shape('spinal_canal', canal, 'polygon',
                                     'spinal canal'))
    return shapes


def _clip_polygon(points: np.ndarray, x_max: float,
                  y_max: float) -> np.ndarray:
    """Clip a polygon to [0, x_max] x [0, y_max] (Sutherland-Hodgman)."""
    polygon = [tuple(point) for point in np.asarray(points, dtype=float)]
    edges = ((0, 0.0, True), (0, x_max, False), (1, 0.0, True),
             (1, y_max, False))
    for axis, limit, keep_above in edges:
        if not polygon:
            break

        def inside(point: tuple[float, float]) -> bool:
            return point[axis] >= limit if keep_above else point[axis] <= limit

        clipped = []
        for current, previous in zip(polygon, polygon[-1:] + polygon[:-1]):
            if inside(current) != inside(previous):
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                clipped.append(tuple(p + t * (c - p)
                                     for p, c in zip(previous, current)))
            if inside(current):
                clipped.append(current)
        polygon = clipped
    return np.asarray(polygon, dtype=float).reshape(-1, 2)
