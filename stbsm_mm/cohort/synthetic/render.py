"""Pixels of one slice: tissue, STB-like and SM-like lesions, scanner.

:func:`_render_slice` paints relative T2 signal (CSF close to 1) and the ROI
masks of the lesions, then applies the site's bias field, intensity scale and
Rician noise to give uint16 pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .anatomy import (_CANAL_GAP_MM, _Anatomy, _disc_frame, _Frame,
                      _layout_spine, _pedicle_margin, _rounded_box,
                      _SpineLayout)
from .patients import _STB, _SiteProfile


@dataclass(frozen=True)
class _LesionOutline:
    """Pixel masks of one lesion ROI: the main region and an optional
    smaller second region outlined as its own shape."""

    main: np.ndarray
    extra: np.ndarray | None


@dataclass(frozen=True)
class _Phantom:
    pixels: np.ndarray  # uint16 (height, width)
    layout: _SpineLayout
    lesions: list[_LesionOutline]


def _render_slice(anatomy: _Anatomy, kind: str, lesion_count: int,
                  profile: _SiteProfile, image_size: tuple[int, int],
                  rng: np.random.Generator) -> _Phantom:
    """Draw one slice: lay out the spine, paint tissue, lesions, scanner."""
    top_cut = float(rng.uniform(0.25, 0.75))
    layout = _layout_spine(anatomy, profile.spacing, image_size, top_cut)

    # Lesion levels are picked on the normal spine. Height loss of a disc or
    # body moves only the levels below it up, so the picked ones stay whole.
    levels = _pick_levels(layout, kind, lesion_count, rng)
    if kind == _STB:
        disc_factors = {level: float(rng.uniform(0.30, 0.65))
                        for level in levels}
        body_factors: dict[int, float] = {}
    else:
        disc_factors = {}
        body_factors = {level: float(rng.uniform(0.60, 0.85))
                        for level in levels if rng.random() < 0.35}
    layout = _layout_spine(anatomy, profile.spacing, image_size, top_cut,
                           disc_factors, body_factors)

    signal = _render_anatomy(layout, anatomy, profile, rng,
                             lesion_discs=set(disc_factors))
    lesions = []
    for level in levels:
        if kind == _STB:
            lesions.append(_paint_stb_lesion(signal, layout, level, rng))
        else:
            lesions.append(_paint_sm_lesion(signal, layout, level, rng))
    pixels = _apply_scanner(signal, profile, rng)
    return _Phantom(pixels, layout, lesions)


def _pick_levels(layout: _SpineLayout, kind: str, count: int,
                 rng: np.random.Generator) -> list[int]:
    """Pick ``count`` disc (STB) or body (SM) levels two or more apart."""
    candidates = (layout.whole_discs() if kind == _STB
                  else layout.whole_vertebrae())
    order = list(rng.permutation(candidates))
    picked: list[int] = []
    for level in order:
        if all(abs(int(level) - other) >= 2 for other in picked):
            picked.append(int(level))
        if len(picked) == count:
            return sorted(picked)
    raise RuntimeError(
        f'Only {len(picked)} of {count} lesion levels fit a slice with '
        f'{len(candidates)} whole levels; this is a bug in the layout.')


def _render_anatomy(layout: _SpineLayout, anatomy: _Anatomy,
                    profile: _SiteProfile, rng: np.random.Generator,
                    lesion_discs: set[int]) -> np.ndarray:
    """Paint normal tissue as relative T2 signal (CSF close to 1)."""
    fine = _smooth_noise(rng, layout.image_size, 1.2)

    signal = _soft_tissue(layout, anatomy, profile, rng, fine)

    # Spinal canal (CSF) with the cord, or the conus and cauda equina.
    _paint(signal, _mask(layout, layout.canal), 0.95 * (1.0 + 0.02 * fine))
    _paint_neural_tissue(signal, layout, anatomy, rng)

    # Bone is a dark cortical rim around fatty marrow. The posterior elements
    # come first, then pedicles and bodies on top of them.
    marrow = anatomy.marrow_signal * (1.0 + 0.08 * fine)
    for arch in layout.arches:
        _paint(signal, _mask(layout, arch), 0.15)
        _paint(signal, _mask(layout, _shrink(arch, 0.8)), 0.8 * marrow)
    for pedicle in layout.pedicles:
        _paint(signal, _mask(layout, pedicle), 0.2)
        _paint(signal, _mask(layout, _shrink(pedicle, 0.75)), 0.9 * marrow)
    for vertebra in layout.vertebrae:
        _paint(signal, _mask(layout, vertebra.outline), 0.08)
        _paint(signal, _mask(layout, vertebra.marrow_outline), marrow)
        vein = _ellipse(vertebra.frame.to_world(
            [[0.85 * vertebra.half_depth, 0.0]])[0],
            vertebra.frame.ap_axis, vertebra.frame.si_axis,
            0.12 * vertebra.half_depth, 0.12 * vertebra.half_height)
        _paint(signal, _mask(layout, vein), 0.65)

    # Discs: dark annulus with a bright nucleus unless degenerated.
    for index, disc in enumerate(layout.discs):
        _paint(signal, _mask(layout, disc), 0.24 * (1.0 + 0.05 * fine))
        if index in lesion_discs:
            continue
        frame, half_depth, half_height = _disc_frame(layout, index)
        nucleus_signal = (0.35 if rng.random() < anatomy.degenerated_disc_rate
                          else rng.uniform(0.70, 0.85))
        center = frame.to_world([[0.08 * half_depth, 0.0]])[0]
        nucleus = _ellipse(center, frame.ap_axis, frame.si_axis,
                           0.7 * half_depth, 0.7 * half_height)
        _paint(signal, _mask(layout, nucleus), nucleus_signal, blur=1.0)
    return signal


def _soft_tissue(layout: _SpineLayout, anatomy: _Anatomy,
                 profile: _SiteProfile, rng: np.random.Generator,
                 fine: np.ndarray) -> np.ndarray:
    """Soft tissue by AP distance from the column (relative signal).

    From anterior to posterior: prevertebral and abdominal tissue with the
    aortic flow void and fluid-filled bowel, paraspinal muscle with fatty
    streaks, subcutaneous fat, then air behind the skin.
    """
    height, width = layout.image_size
    column_spacing, row_spacing = layout.spacing
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = columns * column_spacing - layout.centerline.u(rows * row_spacing)

    signal = np.full(layout.image_size, 0.22, dtype=np.float32)
    streaks = cv2.GaussianBlur(rng.standard_normal(layout.image_size)
                               .astype(np.float32), (0, 0), sigmaX=1.0,
                               sigmaY=8.0)
    streaks /= max(float(streaks.std()), 1e-6)
    signal += _ramp(streaks - 2.0, 0.3) * (0.6 * profile.fat_signal - signal)

    behind_arch = (layout.body_depth / 2.0 + layout.canal_width
                   + layout.arch_length)
    fat_start = behind_arch + anatomy.muscle_mm
    skin = fat_start + anatomy.fat_mm
    fat = _ramp(depth - fat_start, 1.5) * (1.0 - _ramp(depth - skin, 1.0))
    signal += fat * (profile.fat_signal * (1.0 + 0.05 * fine) - signal)
    signal += _ramp(depth - skin, 1.0) * (0.02 - signal)

    smooth = _smooth_noise(rng, layout.image_size, 10.0)
    anterior = _ramp(-depth - 0.7 * layout.body_depth, 3.0)
    signal += anterior * (0.30 * (1.0 + 0.15 * smooth) - signal)
    if rng.random() < 0.35:
        gap = rng.uniform(2.0, 5.0)
        lumen = rng.uniform(8.0, 14.0)
        near = -depth - layout.body_depth / 2.0 - gap
        vessel = _ramp(near, 1.0) * (1.0 - _ramp(near - lumen, 1.0))
        signal += vessel * (0.06 - signal)
    for _ in range(int(rng.integers(0, 3))):
        center = np.array([rng.uniform(0.0, 0.2) * width * column_spacing,
                           rng.uniform(0.1, 0.9) * height * row_spacing])
        radii = rng.uniform(5.0, 12.0, size=2)
        bowel = _ellipse(center, np.array([1.0, 0.0]), np.array([0.0, 1.0]),
                         radii[0], radii[1], rng, roughness=0.2)
        _paint(signal, _mask(layout, bowel), rng.uniform(0.45, 0.7),
               blur=2.0)
    return signal


def _paint_neural_tissue(signal: np.ndarray, layout: _SpineLayout,
                         anatomy: _Anatomy, rng: np.random.Generator) -> None:
    """Cord (thoracic) or conus with cauda equina roots (lumbar)."""
    height = layout.image_size[0] * layout.spacing[1]
    v = np.linspace(-0.2 * height, 1.2 * height, 96)
    canal_front = (layout.centerline.u(v) + layout.body_depth / 2.0
                   + _CANAL_GAP_MM)
    middle = canal_front + 0.45 * layout.canal_width
    if anatomy.region == 'thoracic':
        conus_end = 1.3 * height
    else:
        conus_end = rng.uniform(0.05, 0.3) * height
    half_width = 0.22 * layout.canal_width * np.clip(
        (conus_end - v) / 12.0, 0.0, 1.0)
    keep = half_width > 0.05
    if keep.sum() >= 2:
        cord = np.concatenate([
            np.stack([middle[keep] - half_width[keep], v[keep]], axis=1),
            np.stack([middle[keep] + half_width[keep], v[keep]],
                     axis=1)[::-1]])
        _paint(signal, _mask(layout, cord), 0.40, blur=0.8)
    if anatomy.region == 'lumbar':
        for offset in (-0.15, 0.05, 0.22):
            below = v >= conus_end
            drift = offset * layout.canal_width + 0.1 * layout.canal_width * (
                (v[below] - conus_end) / height)
            center = middle[below] + drift
            root = np.concatenate([
                np.stack([center - 0.4, v[below]], axis=1),
                np.stack([center + 0.4, v[below]], axis=1)[::-1]])
            if len(root) >= 4:
                _paint(signal, _mask(layout, root), 0.45, blur=0.7)


def _paint_stb_lesion(signal: np.ndarray, layout: _SpineLayout, disc: int,
                      rng: np.random.Generator) -> _LesionOutline:
    """Paint an STB-like lesion at disc ``disc`` and return its ROI masks.

    The narrowed disc loses its nucleus, and the anterior parts of the two
    adjacent bodies next to the disc carry the same abnormal signal. A
    paravertebral abscess in front of the disc is part of the ROI or, on some
    ROIs, a second smaller outline.
    """
    level = _draw_lesion_signal(rng)
    texture = _smooth_noise(rng, layout.image_size, 2.0)
    disc_mask = _mask(layout, layout.discs[disc])

    body_masks = []
    for vertebra, corner_y in ((layout.vertebrae[disc], 1.0),
                               (layout.vertebrae[disc + 1], -1.0)):
        corner = vertebra.frame.to_world(
            [[-vertebra.half_depth, corner_y * vertebra.half_height]])[0]
        involved = _ellipse(
            corner, vertebra.frame.ap_axis, vertebra.frame.si_axis,
            rng.uniform(0.8, 1.3) * vertebra.half_depth,
            rng.uniform(0.6, 1.1) * vertebra.half_height, rng,
            roughness=0.15)
        body_masks.append(_mask(layout, involved)
                          & _mask(layout, vertebra.outline))
    body_mask = body_masks[0] | body_masks[1]

    _paint(signal, body_mask,
           level * rng.uniform(0.85, 1.05) * (1.0 + 0.15 * texture))
    _paint(signal, disc_mask,
           np.clip(level + rng.uniform(-0.1, 0.1), 0.1, 1.0)
           * (1.0 + 0.25 * texture), blur=0.8)
    main = disc_mask | body_mask

    extra = None
    if rng.random() < 0.5:
        frame, half_depth, half_height = _disc_frame(layout, disc)
        semi_ap = rng.uniform(0.25, 0.45) * half_depth
        center = frame.to_world([[-half_depth - 0.5 * semi_ap, 0.0]])[0]
        abscess = _ellipse(center, frame.ap_axis, frame.si_axis, semi_ap,
                           rng.uniform(1.2, 2.2) * layout.vertebrae[disc]
                           .half_height, rng, roughness=0.12)
        abscess_mask = _mask(layout, abscess)
        _paint(signal, abscess_mask, 0.22, blur=0.8)
        _paint(signal, _mask(layout, _shrink(abscess, 0.8)),
               rng.uniform(0.8, 0.95) * (1.0 + 0.05 * texture), blur=0.8)
        separate = abscess_mask & ~main
        if rng.random() < 0.3 and 0 < separate.sum() < 0.8 * main.sum():
            extra = separate
        else:
            main |= abscess_mask
    return _LesionOutline(main.astype(np.uint8), _as_uint8(extra))


def _paint_sm_lesion(signal: np.ndarray, layout: _SpineLayout, body: int,
                     rng: np.random.Generator) -> _LesionOutline:
    """Paint an SM-like lesion in body ``body`` and return its ROI masks.

    The lesion fills the posterior part of the body and reaches into the
    pedicle, keeping clear of both endplates so the discs stay intact. Some
    lesions add an epidural component in the canal or, as a second smaller
    outline, a deposit in the posterior elements.
    """
    level = _draw_lesion_signal(rng)
    texture = _smooth_noise(rng, layout.image_size, 2.0)
    vertebra = layout.vertebrae[body]
    frame = vertebra.frame
    margin = _pedicle_margin(vertebra, layout.spacing)
    half_height = vertebra.half_height

    # Vertical extent stays between the endplates minus the margin, and the
    # outline jitter only shrinks the ellipse, so the disc is never touched.
    center_y = rng.uniform(-0.3, 0.1) * half_height
    room = half_height - margin - abs(center_y)
    semi_si = min(room, rng.uniform(0.6, 0.9) * half_height)
    semi_ap = rng.uniform(0.7, 1.3) * vertebra.half_depth
    center = frame.to_world([[vertebra.half_depth, center_y]])[0]
    core = _ellipse(center, frame.ap_axis, frame.si_axis, semi_ap, semi_si,
                    rng, roughness=0.15, shrink_only=True)
    body_part = _mask(layout, core) & _mask(layout, vertebra.outline)

    reach = rng.uniform(0.5, 1.0) * (layout.canal_width
                                     + 0.25 * vertebra.half_depth)
    pedicle_zone = frame.to_world(_rounded_box(
        (reach + 0.3 * vertebra.half_depth) / 2.0, half_height - margin,
        exponent=12.0) + [vertebra.half_depth + (reach - 0.3
                                                 * vertebra.half_depth) / 2.0,
                          0.0])
    pedicle_part = (_mask(layout, pedicle_zone)
                    & _mask(layout, layout.pedicles[body]))
    main = body_part | pedicle_part

    if rng.random() < 0.5:
        epidural_y = rng.uniform(-0.2, 0.2) * half_height
        epidural_room = half_height - margin - abs(epidural_y)
        epidural = _ellipse(
            frame.to_world([[vertebra.half_depth + 0.3 * layout.canal_width,
                             epidural_y]])[0],
            frame.ap_axis, frame.si_axis, 0.35 * layout.canal_width,
            min(epidural_room, 0.6 * half_height), rng, roughness=0.1,
            shrink_only=True)
        main |= _mask(layout, epidural)

    _paint(signal, main, level * (1.0 + 0.18 * texture))

    extra = None
    if rng.random() < 0.25:
        deposit = _ellipse(
            frame.to_world([[vertebra.half_depth + layout.canal_width
                             + 0.45 * layout.arch_length,
                             0.2 * half_height]])[0],
            frame.ap_axis, frame.si_axis, 0.18 * layout.arch_length,
            0.3 * half_height, rng, roughness=0.1, shrink_only=True)
        deposit_mask = _mask(layout, deposit) & ~main
        if 0 < deposit_mask.sum() < 0.8 * main.sum():
            _paint(signal, deposit_mask, level * (1.0 + 0.18 * texture))
            extra = deposit_mask
    return _LesionOutline(main.astype(np.uint8), _as_uint8(extra))


def _draw_lesion_signal(rng: np.random.Generator) -> float:
    """Relative T2 signal of a lesion, one distribution for both classes.

    Most lesions of either class are T2-hyperintense to marrow, some
    hypointense (sclerotic deposits, caseous or fibrotic tissue), so mean ROI
    signal alone does not tell the classes apart.
    """
    if rng.random() < 0.7:
        return float(rng.uniform(0.55, 0.85))
    return float(rng.uniform(0.18, 0.35))


def _apply_scanner(signal: np.ndarray, profile: _SiteProfile,
                   rng: np.random.Generator) -> np.ndarray:
    """Apply the site's bias field, intensity scale and Rician noise."""
    height, width = signal.shape
    y, x = np.mgrid[-1.0:1.0:height * 1j, -1.0:1.0:width * 1j]

    # Spine coils sit behind the patient, so the field rises posteriorly
    # (towards the last column) with a random low-order term on top.
    terms = np.stack([x, y, x * x, y * y, x * y])
    weights = rng.normal(0.0, 0.4, size=5)
    weights[0] = abs(weights[0]) + 0.6
    field = np.tensordot(weights, terms, axes=1)
    field /= max(float(np.abs(field).max()), 1e-6)
    bias = np.exp(profile.bias_strength * field)

    clean = signal * bias * profile.intensity_scale
    sigma = profile.noise_fraction * profile.intensity_scale
    real = clean + rng.normal(0.0, sigma, size=signal.shape)
    imaginary = rng.normal(0.0, sigma, size=signal.shape)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    return np.clip(np.rint(magnitude), 0, 65535).astype(np.uint16)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int],
                  sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    noise = rng.standard_normal(size).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """Smooth step from 0 to 1 as ``distance`` crosses 0, about 4 x ``width``
    wide."""
    return (0.5 + 0.5 * np.tanh(distance / (2.0 * width))).astype(np.float32)


def _ellipse(center: np.ndarray, ap_axis: np.ndarray, si_axis: np.ndarray,
             semi_ap: float, semi_si: float,
             rng: np.random.Generator | None = None, roughness: float = 0.0,
             shrink_only: bool = False, points: int = 64) -> np.ndarray:
    """Sample an ellipse in mm, its radius jittered by ``roughness``."""
    angle = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    radius = np.ones_like(angle)
    if rng is not None and roughness > 0.0:
        wobble = np.zeros_like(angle)
        for harmonic in (2, 3, 5):
            wobble += rng.uniform(0.3, 1.0) * np.cos(
                harmonic * angle + rng.uniform(0.0, 2.0 * np.pi))
        wobble /= max(float(np.abs(wobble).max()), 1e-6)
        if shrink_only:
            radius = 1.0 - roughness * (0.5 + 0.5 * wobble)
        else:
            radius = 1.0 + roughness * wobble
    local = np.stack([semi_ap * radius * np.cos(angle),
                      semi_si * radius * np.sin(angle)], axis=1)
    return _Frame(np.asarray(center, dtype=np.float64), ap_axis,
                  si_axis).to_world(local)


def _shrink(outline: np.ndarray, factor: float) -> np.ndarray:
    """Scale an outline towards its centroid."""
    center = outline.mean(axis=0)
    return center + factor * (outline - center)


def _mask(layout: _SpineLayout, outline_mm: np.ndarray) -> np.ndarray:
    """Rasterize an outline in mm into a boolean pixel mask."""
    mask = np.zeros(layout.image_size, dtype=np.uint8)
    fixed = np.rint(layout.to_pixels(outline_mm) * 16.0).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _paint(signal: np.ndarray, mask: np.ndarray, value: float | np.ndarray,
           blur: float = 0.6) -> None:
    """Blend ``value`` into ``signal`` under a softened mask (partial volume).

    Only the mask's bounding box, padded by four blur widths, is touched.
    """
    x, y, box_width, box_height = cv2.boundingRect(mask.astype(np.uint8))
    if box_width == 0 or box_height == 0:
        return
    pad = int(math.ceil(4.0 * blur)) + 1
    rows = slice(max(y - pad, 0), y + box_height + pad)
    columns = slice(max(x - pad, 0), x + box_width + pad)
    alpha = cv2.GaussianBlur(mask[rows, columns].astype(np.float32), (0, 0),
                             blur)
    target = signal[rows, columns]
    if np.ndim(value):
        value = np.asarray(value, dtype=np.float32)[rows, columns]
    target += alpha * (value - target)


def _as_uint8(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else mask.astype(np.uint8)
