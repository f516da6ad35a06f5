"""Cohort files: output folder, CSV rows and the files of each slice.

Each slice is written as NIfTI, PNG and DICOM, with one Labelme file per ROI
and one for the anatomy. Every file goes through :class:`_CohortWriter`,
which records its path in the manifest, so ``overwrite=True`` can remove a
previous cohort.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pydicom
import SimpleITK as sitk
from mmengine.logging import MMLogger
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .annotations import _anatomy_shapes, _labelme, _lesion_shapes
from .options import _Options
from .patients import _Patient, _SiteProfile
from .render import _Phantom

PLACEHOLDER_IDENTIFIERS: tuple[str, ...] = (
    'SYNTHETIC^PATIENT^',
    'SYNTH-ID-',
    'SYNTH-ACC-',
    'SYNTHETIC HOSPITAL',
    '19000101',
    '19000102',
)
"""Fixed parts of the placeholder identifiers in every synthetic DICOM file.

Each identifying DICOM value (PatientName, PatientID, AccessionNumber,
InstitutionName, PatientBirthDate, StudyDate) contains one of these strings,
so a substring search of any output finds a value copied verbatim. The full
values of one patient come from :func:`placeholder_identifiers`.
"""

MANIFEST_NAME = 'synthetic_manifest.json'
ANATOMY_DIR = 'annotations/anatomy'

PATIENT_COLUMNS = ('patient_id', 'site', 'diagnosis', 'age', 'sex')
ROI_COLUMNS = ('roi_id', 'patient_id', 'image', 'dicom', 'annotation',
               'slice_index', 'label')


def placeholder_identifiers(patient_id: str) -> dict[str, str]:
    """Return the placeholder DICOM identifiers written for one patient.

    Args:
        patient_id: The patient's id in ``patients.csv``, such as ``'P001'``.

    Returns:
        dict[str, str]: DICOM keyword to value for PatientName, PatientID,
        PatientBirthDate, InstitutionName, AccessionNumber and StudyDate.
        Every value contains one string of :data:`PLACEHOLDER_IDENTIFIERS`.

    Examples:
        >>> placeholder_identifiers('P001')['PatientName']
        'SYNTHETIC^PATIENT^P001'
    """
    if not isinstance(patient_id, str) or not patient_id:
        raise ValueError(f'patient_id must be a non-empty string, got '
                         f'{patient_id!r}; pass the id from patients.csv, '
                         "such as 'P001'.")
    return {
        'PatientName': f'SYNTHETIC^PATIENT^{patient_id}',
        'PatientID': f'SYNTH-ID-{patient_id}',
        'PatientBirthDate': '19000101',
        'InstitutionName': 'SYNTHETIC HOSPITAL',
        'AccessionNumber': f'SYNTH-ACC-{patient_id}',
        'StudyDate': '19000102',
    }


def _prepare_output_folder(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir`` or, with ``overwrite``, clear a previous cohort."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f'out_dir {str(out_dir)!r} is a file; pass '
                                 'a folder path.')
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f'out_dir {str(out_dir)!r} is not empty; pass an empty or '
                'new folder, or overwrite=True (--overwrite) to write into '
                'it.')
        _remove_previous_cohort(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _remove_previous_cohort(out_dir: Path) -> None:
    """Delete the files that the manifest of an earlier run lists.

    Only plain files or links inside ``out_dir`` that the manifest names are
    deleted, then those of their folders that became empty. Other files stay.
    """
    logger = MMLogger.get_current_instance()
    manifest_path = out_dir / MANIFEST_NAME
    kept_note = ('existing files are kept and files with the names of the '
                 'new cohort are replaced')
    if not manifest_path.is_file():
        logger.warning(f'{out_dir} has no {MANIFEST_NAME}; {kept_note}.')
        return
    try:
        listed = json.loads(manifest_path.read_text(encoding='utf-8'))['files']
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning(f'Cannot read {manifest_path} ({error}); {kept_note}.')
        return

    root = out_dir.resolve()
    folders: set[Path] = set()
    removed = 0
    for relative in listed:
        parts = Path(str(relative)).parts
        path = out_dir / str(relative)
        if (not isinstance(relative, str) or Path(relative).is_absolute()
                or '..' in parts
                or not path.parent.resolve().is_relative_to(root)):
            logger.warning(f'{manifest_path} lists {relative!r}, which is not '
                           'a path inside the cohort folder; it is kept.')
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed += 1
            folders.update(list(path.parents)[:len(parts) - 1])
    manifest_path.unlink()

    # Deepest folders first, so a parent is empty by the time it is checked.
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if folder.is_dir() and not folder.is_symlink() and not any(
                folder.iterdir()):
            folder.rmdir()
    logger.info(f'Removed {removed} files of the previous synthetic cohort in '
                f'{out_dir}.')


class _CohortWriter:
    """Writes cohort files and records every path it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: list[str] = []

    def path(self, relative: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(relative)
        return path

    def write_text(self, relative: str, text: str) -> None:
        self.path(relative).write_text(text, encoding='utf-8')

    def write_json(self, relative: str, payload: dict) -> None:
        self.write_text(relative, json.dumps(payload, indent=2) + '\n')

    def write_csv(self, relative: str, columns: Sequence[str],
                  rows: Sequence[dict[str, str]]) -> None:
        buffer = io.StringIO()
        table = csv.DictWriter(buffer, fieldnames=list(columns),
                               lineterminator='\n')
        table.writeheader()
        table.writerows(rows)
        self.write_text(relative, buffer.getvalue())

    def write_nifti(self, relative: str, pixels: np.ndarray,
                    spacing: tuple[float, float],
                    origin: tuple[float, float]) -> None:
        image = sitk.GetImageFromArray(pixels)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection((1.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(image, str(self.path(relative)), useCompression=True)

    def write_png(self, relative: str, pixels: np.ndarray) -> None:
        if not cv2.imwrite(str(self.path(relative)), pixels):
            raise OSError(f'OpenCV failed to write {self.root / relative}.')

    def write_dicom(self, relative: str, dataset: pydicom.Dataset) -> None:
        dataset.save_as(self.path(relative), enforce_file_format=True)

    def write_manifest(self, options: _Options, complete: bool) -> None:
        manifest = {
            # The package users import, not this submodule.
            'generator': __package__,
            'complete': complete,
            'options': options.as_dict(),
            'files': sorted(set(self.written)),
        }
        text = json.dumps(manifest, indent=2) + '\n'
        (self.root / MANIFEST_NAME).write_text(text, encoding='utf-8')


def _patient_row(patient: _Patient) -> dict[str, str]:
    return {
        'patient_id': patient.patient_id,
        'site': patient.site,
        'diagnosis': patient.diagnosis,
        'age': str(patient.age),
        'sex': patient.sex,
    }


def _draw_image_position(rng: np.random.Generator, profile: _SiteProfile,
                         image_size: tuple[int, int],
                         slice_number: int) -> tuple[float, float, float]:
    """Draw ImagePositionPatient (LPS, mm) of pixel (0, 0) of one slice.

    A patient's slices sit 4.4 mm apart from left to right, give or take
    2 mm. The field of view is centred on the spine within 10 mm AP and
    60 mm along the table.
    """
    height, width = image_size
    column_spacing, row_spacing = profile.spacing
    left_right = 4.4 * (slice_number - 1) + float(rng.uniform(-2.0, 2.0))
    anterior = -0.5 * width * column_spacing + float(rng.uniform(-10.0, 10.0))
    superior = 0.5 * height * row_spacing + float(rng.uniform(-60.0, 60.0))
    return (round(left_right, 2), round(anterior, 2), round(superior, 2))


def _write_slice(writer: _CohortWriter, slice_id: str, slice_number: int,
                 phantom: _Phantom, patient: _Patient,
                 profile: _SiteProfile, options: _Options,
                 position: tuple[float, float, float],
                 shape_counter: Iterator[int]) -> list[dict[str, str]]:
    """Write the image files, the anatomy file and one Labelme file per ROI."""
    height, width = options.image_size
    image = f'images/{slice_id}.nii.gz'
    png = f'images_png/{slice_id}.png'
    dicom_folder = f'dicom/{slice_id}'

    # The 2-D NIfTI origin is the DICOM position projected on the row and
    # column directions (posterior, inferior), so both describe one plane.
    _, anterior_posterior, superior = position
    writer.write_nifti(image, phantom.pixels, profile.spacing,
                       (anterior_posterior, -superior))
    writer.write_png(png, _to_8bit(phantom.pixels))
    writer.write_dicom(f'{dicom_folder}/IM0001.dcm',
                       _dicom_dataset(phantom.pixels, slice_id, slice_number,
                                      patient, profile, options, position))
    writer.write_json(f'{ANATOMY_DIR}/{slice_id}.json',
                      _labelme(_anatomy_shapes(phantom.layout),
                               f'../../{png}', height, width))

    rows = []
    for number, lesion in enumerate(phantom.lesions, start=1):
        roi_id = f'{slice_id}_roi{number}'
        annotation = f'annotations/{roi_id}.json'
        shapes = _lesion_shapes(lesion, next(shape_counter), height, width)
        writer.write_json(annotation,
                          _labelme(shapes, f'../{png}', height, width))
        rows.append({
            'roi_id': roi_id,
            'patient_id': patient.patient_id,
            'image': image,
            'dicom': dicom_folder,
            'annotation': annotation,
            'slice_index': '',
            'label': '',
        })
    return rows


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Scale linearly so the slice minimum is 0 and its maximum 255."""
    low = float(pixels.min())
    span = max(float(pixels.max()) - low, 1.0)
    scaled = np.rint((pixels.astype(np.float64) - low) * (255.0 / span))
    return scaled.astype(np.uint8)


def _dicom_dataset(pixels: np.ndarray, slice_id: str, slice_number: int,
                   patient: _Patient, profile: _SiteProfile,
                   options: _Options,
                   position: tuple[float, float, float]) -> pydicom.Dataset:
    """Build a one-frame MR Image Storage dataset for the slice."""

    def uid(*parts: object) -> str:
        # UIDs derive from the cohort options, so a rerun reproduces them.
        sources = ['stbsm-mm synthetic cohort', json.dumps(options.as_dict()),
                   *map(str, parts)]
        return generate_uid(entropy_srcs=sources)

    column_spacing, row_spacing = profile.spacing
    identifiers = placeholder_identifiers(patient.patient_id)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = uid('instance', slice_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid('study', patient.patient_id)
    ds.SeriesInstanceUID = uid('series', slice_id)
    ds.FrameOfReferenceUID = uid('frame', patient.patient_id)
    ds.ImageType = ['ORIGINAL', 'PRIMARY', 'M', 'NONE']
    ds.Modality = 'MR'
    ds.Manufacturer = 'SYNTHETIC'
    ds.ManufacturerModelName = profile.model_name
    ds.MagneticFieldStrength = profile.field_strength_t
    ds.SeriesDescription = profile.series_description
    ds.BodyPartExamined = 'SPINE'
    ds.ReferringPhysicianName = ''
    ds.StudyID = '1'
    ds.SeriesNumber = 100 + slice_number
    ds.InstanceNumber = 1
    ds.StudyTime = '000000'
    ds.SeriesDate = identifiers['StudyDate']
    ds.ContentDate = identifiers['StudyDate']
    for keyword, value in identifiers.items():
        setattr(ds, keyword, value)
    ds.PatientSex = patient.sex
    ds.PatientAge = f'{patient.age:03d}Y'
    ds.PatientPosition = 'HFS'

    ds.ScanningSequence = 'SE'
    ds.SequenceVariant = 'SK'
    ds.ScanOptions = ''
    ds.MRAcquisitionType = '2D'
    ds.RepetitionTime = 3000.0
    ds.EchoTime = 100.0
    ds.EchoTrainLength = 16
    ds.SliceThickness = 4.0
    ds.SpacingBetweenSlices = 4.4

    # The row index grows inferiorly (-z) and the column index posteriorly
    # (+y), which makes a sagittal slice in LPS coordinates.
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.ImagePositionPatient = list(position)
    # The slice normal (row direction x column direction) is -x, to the right.
    ds.SliceLocation = round(-position[0], 2)
    ds.PositionReferenceIndicator = ''
    ds.PixelSpacing = [row_spacing, column_spacing]
    ds.set_pixel_data(pixels, photometric_interpretation='MONOCHROME2',
                      bits_stored=16, generate_instance_uid=False)
    return ds
