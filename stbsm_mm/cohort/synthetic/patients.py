"""Sites and patients of a synthetic cohort.

Each site gets a scanner profile (pixel spacing, intensity scale, noise, bias
field). Each patient gets a diagnosis, balanced within the site, an age and a
sex.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import _Options

# Lesion kinds (_Patient.kind): STB-like and SM-like lesion geometry.
_STB = 'stb'
_SM = 'sm'


@dataclass(frozen=True)
class _SiteProfile:
    """Scanner of one site: the source of domain shift between sites."""

    name: str
    spacing: tuple[float, float]  # (column, row) spacing in mm, SimpleITK order
    intensity_scale: float  # stored value of relative signal 1.0
    noise_fraction: float  # Rician noise sd relative to intensity_scale
    bias_strength: float  # log-amplitude of the multiplicative bias field
    fat_signal: float  # relative T2 signal of fat, which varies with sequence
    field_strength_t: float
    model_name: str
    series_description: str
    external: bool


def _draw_site_profile(options: _Options, index: int) -> _SiteProfile:
    """Draw the scanner profile of site ``options.sites[index]``."""
    rng = np.random.default_rng([options.seed, 0, index])
    name = options.sites[index]
    external = name == options.external_site

    if external:
        row_spacing = round(float(rng.uniform(0.50, 0.58)), 4)
        column_spacing = round(float(rng.uniform(0.78, 0.90)), 4)
        spacing = (column_spacing, row_spacing)
        bias_strength = float(rng.uniform(0.35, 0.50))
        noise_fraction = float(rng.uniform(0.035, 0.05))
        series_description = 'T2_TSE SAG'
    else:
        square = round(float(rng.uniform(0.55, 0.85)), 4)
        spacing = (square, square)
        bias_strength = float(rng.uniform(0.10, 0.30))
        noise_fraction = float(rng.uniform(0.015, 0.035))
        series_description = 'SAG T2 TSE'

    return _SiteProfile(
        name=name,
        spacing=spacing,
        intensity_scale=float(rng.uniform(700.0, 3500.0)),
        noise_fraction=noise_fraction,
        bias_strength=bias_strength,
        fat_signal=float(rng.uniform(0.55, 0.85)),
        field_strength_t=float(rng.choice([1.5, 3.0])),
        model_name=f'PHANTOM {index + 1}',
        series_description=series_description,
        external=external,
    )


@dataclass(frozen=True)
class _Patient:
    """One synthetic patient."""

    patient_id: str
    number: int  # 1-based position in the cohort; seeds the patient's draws
    site: str
    kind: str  # _STB or _SM: the lesion geometry
    diagnosis: str  # class name written to patients.csv
    age: int
    sex: str


def _draw_patients(options: _Options) -> list[_Patient]:
    """Draw the patients of every site with balanced diagnoses."""
    total = options.patients_per_site * len(options.sites)
    id_width = max(3, len(str(total)))
    patients: list[_Patient] = []

    for site_index, site in enumerate(options.sites):
        rng = np.random.default_rng([options.seed, 1, site_index])
        first_class_count = options.patients_per_site // 2
        if options.patients_per_site % 2:
            first_class_count += int(rng.integers(2))
        kinds = ([_STB] * first_class_count
                 + [_SM] * (options.patients_per_site - first_class_count))
        rng.shuffle(kinds)

        for kind in kinds:
            # STB patients are younger on average than SM patients, as in
            # clinical series, with wide overlap.
            if kind == _STB:
                age = rng.normal(42.0, 13.0)
            else:
                age = rng.normal(57.0, 9.0)
            number = len(patients) + 1
            patients.append(_Patient(
                patient_id=f'P{number:0{id_width}d}',
                number=number,
                site=site,
                kind=kind,
                diagnosis=options.classes[0 if kind == _STB else 1],
                age=int(np.clip(round(age), 18, 70)),
                sex=str(rng.choice(['M', 'F'])),
            ))
    return patients
