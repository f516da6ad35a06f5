"""Random affine augmentation of lesion crops from sagittal T2-weighted slices.

The transform draws a flip, an anisotropic stretch, an isotropic zoom, a
rotation and a translation, and composes them into one matrix around the
image centre. The crop is then resampled once with :func:`cv2.warpAffine`, so
it is interpolated a single time however many components fire.
"""
import math
from dataclasses import dataclass
from numbers import Real
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmpretrain.registry import TRANSFORMS

INTERPOLATIONS = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
}
BORDER_MODES = {
    'constant': cv2.BORDER_CONSTANT,
    'reflect': cv2.BORDER_REFLECT,
    'reflect_101': cv2.BORDER_REFLECT_101,
    'replicate': cv2.BORDER_REPLICATE,
}
FLIP_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')

# Flip direction -> (x sign, y sign) of the reflection about the centre.
_FLIP_SIGNS = {
    None: (1.0, 1.0),
    'horizontal': (-1.0, 1.0),
    'vertical': (1.0, -1.0),
    'diagonal': (-1.0, -1.0),
}

# Image dtypes that cv2.warpAffine resamples (checked with OpenCV 5.1).
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)

# cv2.warpAffine rejects images with more channels than this (OpenCV 5.1).
_MAX_CV2_CHANNELS = 4


@dataclass(frozen=True)
class AffineParams:
    """Random draw of one :class:`RandomAffine` call.

    Args:
        translate (tuple[float, float]): Shift along x and y as a fraction of
            the image width and height.
        angle (float): Rotation in degrees, counter-clockwise as displayed.
        flip_direction (str, optional): Flip direction, or None for no flip.
        zoom (float): Isotropic scale factor.
        scale (tuple[float, float]): Stretch factors along x and y.
    """

    translate: Tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    flip_direction: Optional[str] = None
    zoom: float = 1.0
    scale: Tuple[float, float] = (1.0, 1.0)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_probability(name: str, value: object) -> float:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f'{name} must be a probability in [0, 1], got '
                         f'{value!r}.')
    return float(value)


def _check_factor_range(name: str, value: object) -> Tuple[float, float]:
    """Validate a ``(low, high)`` range of positive scale factors."""
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or len(value) != 2 or not all(_is_number(v) for v in value)):
        raise ValueError(f'{name} must be a (low, high) pair of numbers, got '
                         f'{value!r}.')
    low, high = float(value[0]), float(value[1])
    if not 0.0 < low <= high or not math.isfinite(high):
        raise ValueError(f'{name} must satisfy 0 < low <= high < inf, got '
                         f'{value!r}. Pass a range such as (0.9, 1.1).')
    return low, high


def _check_translate_ratio(value: object) -> Tuple[float, float]:
    ratios = (value, value) if _is_number(value) else value
    if (not isinstance(ratios, Sequence) or isinstance(ratios, str)
            or len(ratios) != 2 or not all(_is_number(v) for v in ratios)):
        raise ValueError('translate_ratio must be a number or an (x, y) pair '
                         f'of numbers, got {value!r}.')
    if not all(0.0 <= v <= 1.0 for v in ratios):
        raise ValueError('translate_ratio must lie in [0, 1] (a fraction of '
                         f'the image width and height), got {value!r}.')
    return float(ratios[0]), float(ratios[1])


def _check_flip_direction(value: object) -> List[str]:
    directions = [value] if isinstance(value, str) else value
    if (not isinstance(directions, Sequence) or len(directions) == 0
            or not all(d in FLIP_DIRECTIONS for d in directions)):
        raise ValueError('flip_direction must be one of '
                         f'{FLIP_DIRECTIONS} or a non-empty list of them, '
                         f'got {value!r}.')
    return list(directions)


def _check_choice(name: str, value: object, choices: dict) -> str:
    if value not in choices:
        raise ValueError(f'{name} must be one of {sorted(choices)}, got '
                         f'{value!r}.')
    return value


def _check_border_value(
        value: object) -> Union[float, Tuple[float, ...]]:
    if _is_number(value):
        return float(value)
    if (isinstance(value, Sequence) and not isinstance(value, str)
            and len(value) > 0 and all(_is_number(v) for v in value)):
        return tuple(float(v) for v in value)
    raise ValueError('border_value must be a number or a non-empty sequence '
                     f'of numbers (one per channel), got {value!r}.')


@TRANSFORMS.register_module()
class RandomAffine(BaseTransform):
    """Randomly flip, stretch, zoom, rotate and translate an image.

    Each component fires on its own with its own probability. The components
    that fire are composed, in the order flip, stretch, zoom, rotation,
    translation, into one affine matrix around the image centre, and the image
    is resampled once with :func:`cv2.warpAffine` at its input size (one call
    per channel for images with more than 4 channels). Pixels
    mapped from outside the image are filled according to ``border_mode``.
    Random numbers come from numpy's global state, so seeding it (as
    mmengine's ``set_random_seed`` does) makes the draws reproducible.

    Required Keys:

    - img

    Modified Keys:

    - img
    - img_shape

    Added Keys:

    - affine_matrix (np.ndarray): The 3x3 float32 matrix that maps input
      pixel coordinates ``(x, y, 1)`` to output coordinates. It is the
      identity when no component fires.
    - flip (bool)
    - flip_direction (str, optional): None when the image was not flipped.

    Args:
        translate_ratio (float | tuple[float, float]): Maximum shift along x
            and y as a fraction of the image width and height, each in
            [0, 1]. The shift is drawn uniformly from ``[-ratio, ratio]`` per
            axis. A single number applies to both axes. Defaults to
            (0.1, 0.1).
        translate_prob (float): Probability of a translation. Defaults to 0.5.
        max_rotate_degree (float): Maximum rotation in degrees, in [0, 180].
            The angle is drawn uniformly from ``[-max, max]``. Positive angles
            turn the image counter-clockwise as displayed. Defaults to 15.0.
        rotate_prob (float): Probability of a rotation. Defaults to 0.5.
        flip_prob (float): Probability of a flip. Defaults to 0.5.
        flip_direction (str | list[str]): 'horizontal', 'vertical' or
            'diagonal' (both axes), or a list from which one direction is
            drawn uniformly when the flip fires. Defaults to 'horizontal'.
        zoom_range (tuple[float, float]): Range ``(low, high)`` of the
            isotropic scale factor, with ``0 < low <= high``. Values above 1
            enlarge the image content. Defaults to (0.9, 1.1).
        zoom_prob (float): Probability of a zoom. Defaults to 0.5.
        scale_range (tuple[float, float]): Range ``(low, high)`` of the
            anisotropic stretch, with ``0 < low <= high``. The x and y factors
            are drawn independently from it. Defaults to (0.9, 1.1).
        scale_prob (float): Probability of a stretch. Defaults to 0.5.
        interpolation (str): 'nearest', 'bilinear' or 'bicubic'.
            Defaults to 'bilinear'.
        border_mode (str): 'constant', 'reflect', 'reflect_101' or
            'replicate' (the cv2 border modes of the same names).
            Defaults to 'constant'.
        border_value (float | Sequence[float]): Fill value of the 'constant'
            border mode, a single number or one number per channel.
            Defaults to 0.

    Examples:
        >>> import numpy as np
        >>> import stbsm_mm.transforms
        >>> from mmpretrain.registry import TRANSFORMS
        >>> transform = TRANSFORMS.build(dict(
        ...     type='RandomAffine', max_rotate_degree=10.0, flip_prob=0.5))
        >>> crop = np.random.randint(0, 256, (64, 48), dtype=np.uint8)
        >>> results = transform(dict(img=crop))
        >>> results['img'].shape, results['img'].dtype
        ((64, 48), dtype('uint8'))
        >>> results['affine_matrix'].shape
        (3, 3)
    """

    def __init__(self,
                 translate_ratio: Union[float, Tuple[float, float]] = (0.1,
                                                                       0.1),
                 translate_prob: float = 0.5,
                 max_rotate_degree: float = 15.0,
                 rotate_prob: float = 0.5,
                 flip_prob: float = 0.5,
                 flip_direction: Union[str, List[str]] = 'horizontal',
                 zoom_range: Tuple[float, float] = (0.9, 1.1),
                 zoom_prob: float = 0.5,
                 scale_range: Tuple[float, float] = (0.9, 1.1),
                 scale_prob: float = 0.5,
                 interpolation: str = 'bilinear',
                 border_mode: str = 'constant',
                 border_value: Union[float, Sequence[float]] = 0) -> None:
        self.translate_ratio = _check_translate_ratio(translate_ratio)
        self.translate_prob = _check_probability('translate_prob',
                                                 translate_prob)

        if not _is_number(max_rotate_degree) or not (0.0 <= max_rotate_degree
                                                     <= 180.0):
            raise ValueError('max_rotate_degree must be a number in '
                             f'[0, 180], got {max_rotate_degree!r}.')
        self.max_rotate_degree = float(max_rotate_degree)
        self.rotate_prob = _check_probability('rotate_prob', rotate_prob)

        self.flip_prob = _check_probability('flip_prob', flip_prob)
        self.flip_direction = _check_flip_direction(flip_direction)

        self.zoom_range = _check_factor_range('zoom_range', zoom_range)
        self.zoom_prob = _check_probability('zoom_prob', zoom_prob)

        self.scale_range = _check_factor_range('scale_range', scale_range)
        self.scale_prob = _check_probability('scale_prob', scale_prob)

        self.interpolation = _check_choice('interpolation', interpolation,
                                           INTERPOLATIONS)
        self.border_mode = _check_choice('border_mode', border_mode,
                                         BORDER_MODES)
        self.border_value = _check_border_value(border_value)

    @cache_randomness
    def _sample_params(self) -> AffineParams:
        """Draw which components fire and their values.

        Each component takes one draw to decide whether it fires and draws
        its value only when it fires.
        """
        translate = (0.0, 0.0)
        if np.random.rand() < self.translate_prob:
            ratio_x, ratio_y = self.translate_ratio
            translate = (float(np.random.uniform(-ratio_x, ratio_x)),
                         float(np.random.uniform(-ratio_y, ratio_y)))

        angle = 0.0
        if np.random.rand() < self.rotate_prob:
            angle = float(
                np.random.uniform(-self.max_rotate_degree,
                                  self.max_rotate_degree))

        flip_direction = None
        if np.random.rand() < self.flip_prob:
            index = np.random.randint(len(self.flip_direction))
            flip_direction = self.flip_direction[index]

        zoom = 1.0
        if np.random.rand() < self.zoom_prob:
            zoom = float(np.random.uniform(*self.zoom_range))

        scale = (1.0, 1.0)
        if np.random.rand() < self.scale_prob:
            scale = (float(np.random.uniform(*self.scale_range)),
                     float(np.random.uniform(*self.scale_range)))

        return AffineParams(translate=translate,
                            angle=angle,
                            flip_direction=flip_direction,
                            zoom=zoom,
                            scale=scale)

    @staticmethod
    def build_matrix(params: AffineParams, height: int,
                     width: int) -> np.ndarray:
        """Compose the 3x3 float64 matrix of ``params`` for an image size.

        The centre is ``((width - 1) / 2, (height - 1) / 2)`` in pixel
        coordinates, so a flip maps pixel ``x`` to ``width - 1 - x`` exactly.

        Args:
            params (AffineParams): The drawn components.
            height (int): Image height in pixels.
            width (int): Image width in pixels.

        Returns:
            np.ndarray: Matrix mapping input ``(x, y, 1)`` to output
            coordinates.
        """
        sign_x, sign_y = _FLIP_SIGNS[params.flip_direction]
        flip = np.diag([sign_x, sign_y])
        stretch = np.diag([params.zoom * params.scale[0],
                           params.zoom * params.scale[1]])

        # The y axis points down, so this form turns the content
        # counter-clockwise on screen for a positive angle.
        theta = math.radians(params.angle)
        cos, sin = math.cos(theta), math.sin(theta)
        rotation = np.array([[cos, sin], [-sin, cos]])

        linear = rotation @ stretch @ flip
        centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        shift = np.array([params.translate[0] * width,
                          params.translate[1] * height])

        matrix = np.eye(3)
        matrix[:2, :2] = linear
        matrix[:2, 2] = centre + shift - linear @ centre
        return matrix

    def _warp(self, img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Resample ``img`` with the 2x3 part of ``matrix``."""
        channels = 1 if img.ndim == 2 else img.shape[2]
        border_value = self.border_value
        if isinstance(border_value, tuple) and len(border_value) == 1:
            border_value = border_value[0]
        if isinstance(border_value,
                      tuple) and len(border_value) != channels:
            raise ValueError(
                f'border_value has {len(border_value)} entries but the image '
                f'has {channels} channels. Pass one value per channel or a '
                'single number.')

        if channels <= _MAX_CV2_CHANNELS:
            warped = self._warp_with_cv2(img, matrix, border_value)
            # cv2 drops a trailing channel axis of length 1.
            return warped.reshape(img.shape)

        # NOTE: cv2 rounds differently for different channel counts, so an
        # image with more channels than cv2 takes is warped one channel at a
        # time (one cv2 call per channel) to resample every channel alike.
        planes = []
        for channel in range(channels):
            fill = border_value
            if isinstance(fill, tuple):
                fill = fill[channel]
            planes.append(self._warp_with_cv2(img[..., channel], matrix, fill))
        return np.stack(planes, axis=2)

    def _warp_with_cv2(self, img: np.ndarray, matrix: np.ndarray,
                       fill: Union[float, Tuple[float, ...]]) -> np.ndarray:
        height, width = img.shape[:2]
        return cv2.warpAffine(img,
                              matrix[:2],
                              (width, height),
                              flags=INTERPOLATIONS[self.interpolation],
                              borderMode=BORDER_MODES[self.border_mode],
                              borderValue=fill)

    def transform(self, results: dict) -> dict:
        """Apply one random affine transform to ``results['img']``.

        Args:
            results (dict): Result dict with ``img``, an H x W or H x W x C
                array of dtype uint8, uint16, int16, float32 or float64.

        Returns:
            dict: ``results`` with the warped ``img`` and the keys
            ``img_shape``, ``affine_matrix``, ``flip`` and ``flip_direction``.
        """
        if 'img' not in results:
            raise KeyError('Missing results["img"]. Put a loading transform '
                           'such as LoadImageFromFile before RandomAffine.')
        img = results['img']
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise ValueError('results["img"] must be an H x W or H x W x C '
                             'numpy array, got '
                             f'{getattr(img, "shape", type(img))!r}.')
        if img.dtype.type not in SUPPORTED_DTYPES:
            raise TypeError(
                f'RandomAffine cannot resample images of dtype {img.dtype}. '
                'Convert them to uint8 or float32 first, for example with '
                'to_float32=True in LoadImageFromFile.')

        height, width = img.shape[:2]
        params = self._sample_params()
        matrix = self.build_matrix(params, height, width)

        results['img'] = self._warp(img, matrix)
        results['img_shape'] = results['img'].shape[:2]
        results['affine_matrix'] = matrix.astype(np.float32)
        results['flip'] = params.flip_direction is not None
        results['flip_direction'] = params.flip_direction
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f'translate_ratio={self.translate_ratio}, '
                f'translate_prob={self.translate_prob}, '
                f'max_rotate_degree={self.max_rotate_degree}, '
                f'rotate_prob={self.rotate_prob}, '
                f'flip_prob={self.flip_prob}, '
                f'flip_direction={self.flip_direction}, '
                f'zoom_range={self.zoom_range}, '
                f'zoom_prob={self.zoom_prob}, '
                f'scale_range={self.scale_range}, '
                f'scale_prob={self.scale_prob}, '
                f"interpolation='{self.interpolation}', "
                f"border_mode='{self.border_mode}', "
                f'border_value={self.border_value})')
