"""Options of one synthetic cohort: their limits and their validation."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Limits of the options. Below 64 pixels a vertebral body is only a few
# pixels tall. Two lesions per slice fit at separate levels on every slice.
# Five-digit patient ids keep AccessionNumber within its 16 characters.
_MIN_IMAGE_SIDE = 64
_MAX_IMAGE_SIDE = 2048
_MAX_ROIS_PER_PATIENT = 8
_MAX_LESIONS_PER_SLICE = 2
_MAX_PATIENTS = 99999


@dataclass(frozen=True)
class _Options:
    """Validated options of one cohort."""

    patients_per_site: int
    sites: tuple[str, ...]
    rois_per_patient: tuple[int, int]
    image_size: tuple[int, int]
    seed: int
    classes: tuple[str, str]
    external_site: str

    def as_dict(self) -> dict:
        return {
            'patients_per_site': self.patients_per_site,
            'sites': list(self.sites),
            'rois_per_patient': list(self.rois_per_patient),
            'image_size': list(self.image_size),
            'seed': self.seed,
            'classes': list(self.classes),
            'external_site': self.external_site,
        }


def _validate_options(patients_per_site: int, sites: Sequence[str],
                      rois_per_patient: tuple[int, int],
                      image_size: tuple[int, int], seed: int,
                      classes: tuple[str, str],
                      external_site: str | None) -> _Options:
    """Check the public options and return them in normalized form."""
    if not _is_int(patients_per_site) or patients_per_site < 2:
        raise ValueError(
            f'patients_per_site must be an integer of at least 2 (one patient '
            f'per class and site), got {patients_per_site!r}.')

    if isinstance(sites, str) or not isinstance(sites, Sequence):
        raise TypeError(f'sites must be a sequence of site names, got '
                        f'{sites!r}; pass for example sites=({sites!r},).')
    site_names = tuple(sites)
    if not site_names:
        raise ValueError('sites is empty; pass at least one site name.')
    for name in site_names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'sites must contain non-empty strings, got '
                             f'{name!r} in {site_names!r}.')
    if len(set(site_names)) != len(site_names):
        raise ValueError(f'sites contains a name twice: {site_names!r}; '
                         'give each site a distinct name.')
    if patients_per_site * len(site_names) > _MAX_PATIENTS:
        raise ValueError(
            f'patients_per_site {patients_per_site} x {len(site_names)} sites '
            f'exceeds {_MAX_PATIENTS} patients; pass fewer patients or sites.')

    if (not isinstance(rois_per_patient, Sequence)
            or len(rois_per_patient) != 2
            or not all(_is_int(n) for n in rois_per_patient)):
        raise TypeError(f'rois_per_patient must be a pair of integers (min, '
                        f'max), got {rois_per_patient!r}.')
    low, high = int(rois_per_patient[0]), int(rois_per_patient[1])
    if not 1 <= low <= high <= _MAX_ROIS_PER_PATIENT:
        raise ValueError(
            f'rois_per_patient must satisfy 1 <= min <= max <= '
            f'{_MAX_ROIS_PER_PATIENT}, got {rois_per_patient!r}.')

    if (not isinstance(image_size, Sequence) or len(image_size) != 2
            or not all(_is_int(n) for n in image_size)):
        raise TypeError(f'image_size must be a pair of integers (height, '
                        f'width), got {image_size!r}.')
    height, width = int(image_size[0]), int(image_size[1])
    for side_name, side in (('height', height), ('width', width)):
        if not _MIN_IMAGE_SIDE <= side <= _MAX_IMAGE_SIDE:
            raise ValueError(
                f'image_size {side_name} must be {_MIN_IMAGE_SIDE} to '
                f'{_MAX_IMAGE_SIDE} pixels, got {image_size!r}.')

    if not _is_int(seed) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}.')

    if (isinstance(classes, str) or not isinstance(classes, Sequence)
            or len(classes) != 2):
        raise TypeError(f"classes must be two class names such as "
                        f"('STB', 'SM'), got {classes!r}.")
    class_names = (classes[0], classes[1])
    if (not all(isinstance(name, str) and name.strip()
                for name in class_names)
            or class_names[0] == class_names[1]):
        raise ValueError(f'classes must be two distinct non-empty strings, '
                         f'got {classes!r}.')

    if external_site is None:
        external_site = site_names[-1]
    elif external_site not in site_names:
        raise ValueError(f'external_site {external_site!r} is not one of '
                         f'sites {site_names!r}; pass one of them or add it '
                         'to sites.')

    return _Options(int(patients_per_site), site_names, (low, high),
                    (height, width), int(seed), class_names, external_site)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
