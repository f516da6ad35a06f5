"""Public entry point: draw, render and write a whole synthetic cohort."""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from mmengine.logging import MMLogger

from stbsm_mm.classes import DEFAULT_CLASSES

from .anatomy import _draw_anatomy
from .options import _MAX_LESIONS_PER_SLICE, _Options, _validate_options
from .patients import (_draw_patients, _draw_site_profile, _Patient,
                       _SiteProfile)
from .readme import _cohort_readme
from .render import _render_slice
from .writers import (PATIENT_COLUMNS, ROI_COLUMNS, _CohortWriter,
                      _draw_image_position, _patient_row,
                      _prepare_output_folder, _write_slice)


def generate_synthetic_cohort(
    out_dir: str | Path,
    patients_per_site: int = 8,
    sites: Sequence[str] = ('Site A', 'Site B', 'Site C'),
    rois_per_patient: tuple[int, int] = (1, 3),
    image_size: tuple[int, int] = (256, 256),
    seed: int = 0,
    classes: tuple[str, str] = DEFAULT_CLASSES,
    overwrite: bool = False,
    *,
    external_site: str | None = None,
) -> Path:
    """Write a synthetic STB/SM cohort of phantom MR slices to a folder.

    Every file is a function of the options alone: the same options give the
    same CSV files, pixel data and DICOM UIDs. Each site has its own pixel
    spacing, intensity scale, noise level and bias-field strength. One site
    has non-square pixels and the strongest shift: ``external_site`` when
    given, else the last site.

    Args:
        out_dir: Cohort folder to write. It is created when missing and must
            be empty unless ``overwrite`` is true.
        patients_per_site: Patients drawn per site, at least 2. The two
            diagnoses are balanced within each site (an odd count gives one
            class one patient more).
        sites: Site names, written to ``patients.csv``. At most 99999
            patients in all.
        rois_per_patient: Inclusive (min, max) number of lesion ROIs per
            patient, between 1 and 8. A slice contains one or two ROIs, so
            a patient has one or more slices.
        image_size: Slice size (height, width) in pixels, each 64 to 2048.
        seed: Non-negative seed of every random draw.
        classes: Class names written as ``diagnosis``: the first gets
            STB-like lesions, the second SM-like lesions.
        overwrite: Write into a non-empty ``out_dir``. Files listed in the
            manifest of a previous synthetic cohort there are removed first.
            Other files are kept, unless they have the name of a file this
            call writes, which replaces them.
        external_site: Site to draw with the shifted scanner profile
            (non-square pixels, stronger bias field and noise). Default: the
            last of ``sites``.

    Returns:
        Path: The cohort folder.

    Raises:
        ValueError: An option is out of range.
        TypeError: An option has the wrong type.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
        NotADirectoryError: ``out_dir`` is an existing file.

    Examples:
        >>> cohort = generate_synthetic_cohort(
        ...     'data/synthetic', patients_per_site=2, sites=('A', 'B'),
        ...     image_size=(128, 128), seed=1)
        >>> sorted(p.name for p in cohort.iterdir())[:3]
        ['README.md', 'annotations', 'dicom']
    """
    logger = MMLogger.get_current_instance()
    options = _validate_options(patients_per_site, sites, rois_per_patient,
                                image_size, seed, classes, external_site)
    out_dir = Path(out_dir)
    _prepare_output_folder(out_dir, overwrite)
    started = time.perf_counter()

    # Scanner profiles and patients are drawn first from their own random
    # streams, so the image size does not change who the patients are.
    profiles = {
        name: _draw_site_profile(options, index)
        for index, name in enumerate(options.sites)
    }
    patients = _draw_patients(options)

    writer = _CohortWriter(out_dir)
    complete = False
    try:
        roi_rows: list[dict[str, str]] = []
        shape_counter = itertools.count()
        for patient in patients:
            roi_rows += _generate_patient(patient, profiles[patient.site],
                                          options, writer, shape_counter)

        writer.write_csv('patients.csv', PATIENT_COLUMNS,
                         [_patient_row(patient) for patient in patients])
        writer.write_csv('rois.csv', ROI_COLUMNS, roi_rows)
        writer.write_text('README.md',
                          _cohort_readme(options, profiles, patients,
                                         roi_rows))
        complete = True
    finally:
        writer.write_manifest(options, complete)

    slice_count = len({row['image'] for row in roi_rows})
    logger.info(
        f'Synthetic cohort written to {out_dir}: {len(patients)} patients, '
        f'{slice_count} slices, {len(roi_rows)} ROIs, seed {options.seed}, '
        f'{time.perf_counter() - started:.1f} s.')
    return out_dir


def _generate_patient(patient: _Patient, profile: _SiteProfile,
                      options: _Options, writer: _CohortWriter,
                      shape_counter: Iterator[int]) -> list[dict[str, str]]:
    """Draw, render and write every slice of one patient."""
    rng = np.random.default_rng([options.seed, 2, patient.number])
    anatomy = _draw_anatomy(rng, patient)

    # ROIs go one or two to a slice: two lesions of one slice sit at
    # separate levels, each with its own ROI row and Labelme file.
    low, high = options.rois_per_patient
    roi_count = int(rng.integers(low, high + 1))
    slice_sizes: list[int] = []
    for _ in range(roi_count):
        if (slice_sizes and slice_sizes[-1] < _MAX_LESIONS_PER_SLICE
                and rng.random() < 0.5):
            slice_sizes[-1] += 1
        else:
            slice_sizes.append(1)

    rows: list[dict[str, str]] = []
    for slice_number, lesion_count in enumerate(slice_sizes, start=1):
        slice_id = f'{patient.patient_id}_s{slice_number}'
        phantom = _render_slice(anatomy, patient.kind, lesion_count, profile,
                                options.image_size, rng)
        position = _draw_image_position(rng, profile, options.image_size,
                                        slice_number)
        rows += _write_slice(writer, slice_id, slice_number, phantom,
                             patient, profile, options, position,
                             shape_counter)
    return rows
