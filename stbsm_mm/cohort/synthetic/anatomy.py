"""Spine geometry in mm: vertebral bodies, discs, pedicles, arches, canal.

:func:`_draw_anatomy` draws the spine of one patient and :func:`_layout_spine`
places it on one slice. Points are (u, v) in mm, with u = column * column
spacing (growing posteriorly) and v = row * row spacing (growing inferiorly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .patients import _Patient

# Posterior longitudinal ligament and epidural space between the back of the
# bodies and the CSF (mm).
_CANAL_GAP_MM = 0.8


@dataclass(frozen=True)
class _Anatomy:
    """Spine of one patient, shared by all of that patient's slices."""

    region: str  # 'lumbar' or 'thoracic'
    visible_levels: int  # whole vertebral bodies aimed for in the view
    disc_ratio: float  # disc height / body height
    depth_ratio: float  # body AP depth / body height
    canal_ratio: float  # spinal canal AP width / body depth
    arch_ratio: float  # posterior element AP length / body depth
    curvature: float  # u at top and bottom rows minus u at middle / depth
    slope: float  # linear AP drift from middle to bottom row / body depth
    column_position: float  # body centre at this fraction of the AP view
    marrow_signal: float  # relative T2 signal of normal marrow
    degenerated_disc_rate: float  # chance that a normal disc is dark
    muscle_mm: float  # paraspinal muscle thickness behind the arch
    fat_mm: float  # subcutaneous fat thickness


def _draw_anatomy(rng: np.random.Generator, patient: _Patient) -> _Anatomy:
    region = 'lumbar' if rng.random() < 0.6 else 'thoracic'
    lumbar = region == 'lumbar'

    # With age, marrow turns fattier (brighter on T2) and discs degenerate.
    older = (patient.age - 18) / 52.0
    curvature = rng.uniform(0.15, 0.6) * (1.0 if lumbar else -1.0)
    return _Anatomy(
        region=region,
        visible_levels=int(rng.integers(5, 8)),
        disc_ratio=float(rng.uniform(0.28, 0.36) if lumbar
                         else rng.uniform(0.18, 0.24)),
        depth_ratio=float(rng.uniform(1.25, 1.40) if lumbar
                          else rng.uniform(1.00, 1.15)),
        canal_ratio=float(rng.uniform(0.45, 0.55) if lumbar
                          else rng.uniform(0.40, 0.50)),
        arch_ratio=float(rng.uniform(0.7, 0.9)),
        curvature=float(curvature),
        slope=float(rng.uniform(-0.2, 0.2)),
        column_position=float(rng.uniform(0.36, 0.46)),
        marrow_signal=float(rng.uniform(0.38, 0.50) + 0.06 * older),
        degenerated_disc_rate=float(0.05 + 0.35 * older),
        muscle_mm=float(rng.uniform(30.0, 55.0)),
        fat_mm=float(rng.uniform(8.0, 30.0)),
    )


@dataclass(frozen=True)
class _Frame:
    """Local frame in mm: x runs posterior and y runs inferior."""

    center: np.ndarray  # (u, v) in mm: u = column * sx, v = row * sy
    ap_axis: np.ndarray
    si_axis: np.ndarray

    def to_world(self, local: np.ndarray) -> np.ndarray:
        local = np.asarray(local, dtype=np.float64).reshape(-1, 2)
        return (self.center + local[:, :1] * self.ap_axis
                + local[:, 1:] * self.si_axis)


@dataclass(frozen=True)
class _Centerline:
    """AP position u(v) of the body centres down the column (mm)."""

    offset: float  # u at the middle row
    curvature: float  # u at the top and bottom rows minus u at the middle
    slope: float  # linear drift of u from the middle to the bottom row
    middle: float  # v of the middle row

    def u(self, v: np.ndarray | float) -> np.ndarray | float:
        t = (v - self.middle) / self.middle
        return self.offset + self.curvature * t * t + self.slope * t

    def frame_at(self, v: float) -> _Frame:
        """Frame at height ``v`` with its y axis along the column."""
        du_dv = (2.0 * self.curvature * (v - self.middle) / self.middle
                 + self.slope) / self.middle
        si_axis = np.array([du_dv, 1.0]) / math.hypot(du_dv, 1.0)
        ap_axis = np.array([si_axis[1], -si_axis[0]])
        return _Frame(np.array([self.u(v), v]), ap_axis, si_axis)


@dataclass(frozen=True)
class _Vertebra:
    frame: _Frame
    half_depth: float
    half_height: float
    concavity: float  # endplate dent as a fraction of the half height
    outline: np.ndarray  # cortex outline in mm, (N, 2)
    marrow_outline: np.ndarray  # inner outline of the cortex in mm


@dataclass(frozen=True)
class _SpineLayout:
    """Geometry of one slice in mm. Index 0 is the top vertebra."""

    spacing: tuple[float, float]
    image_size: tuple[int, int]
    body_depth: float
    canal_width: float
    arch_length: float
    vertebrae: list[_Vertebra]
    discs: list[np.ndarray]  # discs[i] lies between vertebrae i and i + 1
    pedicles: list[np.ndarray]
    arches: list[np.ndarray]
    canal: np.ndarray
    centerline: _Centerline

    def to_pixels(self, points_mm: np.ndarray) -> np.ndarray:
        return np.asarray(points_mm) / np.asarray(self.spacing)

    def inside(self, points_mm: np.ndarray) -> bool:
        pixels = self.to_pixels(points_mm)
        height, width = self.image_size
        return bool(np.all(pixels >= 0.0) and np.all(pixels[:, 0] <= width - 1)
                    and np.all(pixels[:, 1] <= height - 1))

    def whole_vertebrae(self) -> list[int]:
        return [i for i, vertebra in enumerate(self.vertebrae)
                if self.inside(vertebra.outline)]

    def whole_discs(self) -> list[int]:
        whole = set(self.whole_vertebrae())
        return [i for i in range(len(self.discs))
                if i in whole and i + 1 in whole]


def _layout_spine(anatomy: _Anatomy, spacing: tuple[float, float],
                  image_size: tuple[int, int], top_cut: float,
                  disc_factors: dict[int, float] | None = None,
                  body_factors: dict[int, float] | None = None
                  ) -> _SpineLayout:
    """Stack vertebral bodies and discs down a curved column.

    The base body height makes ``anatomy.visible_levels`` bodies fill the
    field of view, and ``top_cut`` is the fraction of the top body above row 0.
    ``disc_factors`` and ``body_factors`` shrink single discs or bodies by
    index from the top (disc height loss, vertebral collapse).
    """
    disc_factors = disc_factors or {}
    body_factors = body_factors or {}
    column_spacing, row_spacing = spacing
    height, width = image_size
    view_height = height * row_spacing
    view_depth = width * column_spacing

    # Size the bodies to the view height, then shrink them when the spine
    # would not fit the AP extent of a narrow view.
    levels = anatomy.visible_levels
    body_height = view_height / (levels + (levels + 1) * anatomy.disc_ratio
                                 + 0.9)
    needed_depth = anatomy.depth_ratio * (
        1.0 + anatomy.canal_ratio + anatomy.arch_ratio + 0.8)
    body_height = min(body_height, 0.9 * view_depth / needed_depth)
    body_depth = anatomy.depth_ratio * body_height
    disc_height = anatomy.disc_ratio * body_height
    canal_width = anatomy.canal_ratio * body_depth
    arch_length = anatomy.arch_ratio * body_depth

    centerline = _Centerline(anatomy.column_position * view_depth,
                             anatomy.curvature * body_depth,
                             anatomy.slope * body_depth, view_height / 2.0)

    # Walk down the column until a body reaches past the bottom row.
    vertebrae: list[_Vertebra] = []
    top = -top_cut * body_height
    index = 0
    while True:
        body = body_height * body_factors.get(index, 1.0)
        frame = centerline.frame_at(top + body / 2.0)
        vertebrae.append(_make_vertebra(frame, body_depth / 2.0, body / 2.0,
                                        collapsed=index in body_factors,
                                        spacing=spacing))
        bottom = top + body
        if bottom >= view_height:
            break
        top = bottom + disc_height * disc_factors.get(index, 1.0)
        index += 1

    discs = [_disc_outline(upper, lower, body_depth)
             for upper, lower in zip(vertebrae[:-1], vertebrae[1:])]
    pedicles = [_pedicle_outline(vertebra, canal_width, spacing)
                for vertebra in vertebrae]
    arches = [_arch_outline(vertebra, canal_width, arch_length)
              for vertebra in vertebrae]

    canal = _canal_outline(centerline, body_depth, canal_width, view_height)
    return _SpineLayout(spacing, image_size, body_depth, canal_width,
                        arch_length, vertebrae, discs, pedicles, arches, canal,
                        centerline)


def _rounded_box(half_x: float, half_y: float, exponent: float = 8.0,
                 concavity: float = 0.0, points: int = 96) -> np.ndarray:
    """Sample a superellipse; ``concavity`` dents the top and bottom edges."""
    angle = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    cos, sin = np.cos(angle), np.sin(angle)
    x = half_x * np.sign(cos) * np.abs(cos) ** (2.0 / exponent)
    y = half_y * np.sign(sin) * np.abs(sin) ** (2.0 / exponent)
    y -= np.sign(y) * concavity * half_y * (1.0 - (x / half_x) ** 2)
    return np.stack([x, y], axis=1)


def _make_vertebra(frame: _Frame, half_depth: float, half_height: float,
                   collapsed: bool, spacing: tuple[float, float]
                   ) -> _Vertebra:
    # Endplates are slightly biconcave, those of a collapsed body more so.
    concavity = 0.10 if collapsed else 0.04
    cortex = max(1.0, 1.2 * max(spacing))
    outline = frame.to_world(_rounded_box(half_depth, half_height,
                                          concavity=concavity))
    marrow = frame.to_world(_rounded_box(half_depth - cortex,
                                         half_height - cortex,
                                         concavity=concavity))
    return _Vertebra(frame, half_depth, half_height, concavity, outline,
                     marrow)


def _endplate(vertebra: _Vertebra, lower: bool) -> np.ndarray:
    """Points of the lower or upper endplate, anterior to posterior (mm)."""
    local = _rounded_box(vertebra.half_depth, vertebra.half_height,
                         concavity=vertebra.concavity)
    keep = np.abs(local[:, 0]) <= 0.9 * vertebra.half_depth
    keep &= local[:, 1] > 0 if lower else local[:, 1] < 0
    local = local[keep]
    local = local[np.argsort(local[:, 0])]
    return vertebra.frame.to_world(local)


def _disc_outline(upper: _Vertebra, lower: _Vertebra,
                  body_depth: float) -> np.ndarray:
    """Disc between two bodies: their endplates plus a small annular bulge."""
    top = _endplate(upper, lower=True)
    bottom = _endplate(lower, lower=False)
    bulge = 0.05 * body_depth
    ap_axis = (upper.frame.ap_axis + lower.frame.ap_axis) / 2.0
    posterior = (top[-1] + bottom[-1]) / 2.0 + bulge * ap_axis
    anterior = (top[0] + bottom[0]) / 2.0 - bulge * ap_axis
    return np.concatenate([top, posterior[None], bottom[::-1], anterior[None]])


def _disc_frame(layout: _SpineLayout, index: int) -> tuple[_Frame, float,
                                                           float]:
    """Return the frame, half depth and half height of disc ``index``."""
    upper, lower = layout.vertebrae[index], layout.vertebrae[index + 1]
    upper_point = upper.frame.center + upper.half_height * upper.frame.si_axis
    lower_point = lower.frame.center - lower.half_height * lower.frame.si_axis
    si_axis = upper.frame.si_axis + lower.frame.si_axis
    si_axis /= np.linalg.norm(si_axis)
    frame = _Frame((upper_point + lower_point) / 2.0,
                   np.array([si_axis[1], -si_axis[0]]), si_axis)
    half_height = max(float(np.linalg.norm(lower_point - upper_point)) / 2.0,
                      0.3)
    return frame, upper.half_depth, half_height


def _pedicle_margin(vertebra: _Vertebra, spacing: tuple[float, float]
                    ) -> float:
    """Clearance kept between SM-like structures and the endplates (mm)."""
    return max(0.2 * vertebra.half_height, 2.5 * spacing[1])


def _pedicle_outline(vertebra: _Vertebra, canal_width: float,
                     spacing: tuple[float, float]) -> np.ndarray:
    """Pedicle from the upper posterior body across the canal to the arch."""
    start = vertebra.half_depth - 0.15 * vertebra.half_depth
    end = vertebra.half_depth + canal_width + 0.1 * vertebra.half_depth
    top = -vertebra.half_height + _pedicle_margin(vertebra, spacing)
    bottom = 0.05 * vertebra.half_height
    local = _rounded_box((end - start) / 2.0, (bottom - top) / 2.0,
                         exponent=5.0, points=48)
    local += [(start + end) / 2.0, (top + bottom) / 2.0]
    return vertebra.frame.to_world(local)


def _arch_outline(vertebra: _Vertebra, canal_width: float,
                  arch_length: float) -> np.ndarray:
    """Lamina and spinous process behind the canal, sloping inferiorly."""
    start = vertebra.half_depth + canal_width
    half = vertebra.half_height
    corners = np.array([
        [start, -0.75 * half],
        [start + 0.35 * arch_length, -0.55 * half],
        [start + arch_length, 0.15 * half],
        [start + arch_length, 0.75 * half],
        [start + 0.4 * arch_length, 0.95 * half],
        [start, 1.05 * half],
    ])
    return vertebra.frame.to_world(_smooth_corners(corners, 3))


def _smooth_corners(points: np.ndarray, iterations: int) -> np.ndarray:
    """Round the corners of a closed polygon by Chaikin corner cutting."""
    for _ in range(iterations):
        following = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * following,
                           0.25 * points + 0.75 * following],
                          axis=1).reshape(-1, 2)
    return points


def _canal_outline(centerline: _Centerline, body_depth: float,
                   canal_width: float, view_height: float) -> np.ndarray:
    """Band of CSF behind the bodies along the whole column."""
    v = np.linspace(-0.2 * view_height, 1.2 * view_height, 64)
    anterior = centerline.u(v) + body_depth / 2.0 + _CANAL_GAP_MM
    posterior = anterior + canal_width
    front = np.stack([anterior, v], axis=1)
    back = np.stack([posterior, v], axis=1)[::-1]
    return np.concatenate([front, back])
