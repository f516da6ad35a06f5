"""Phantom slices, DICOM series, Labelme files and cohort folders for tests.

Everything here is written into a test's ``tmp_path``: small synthetic
slices (a bright disc on a dark background), DICOM series written with
pydicom, Labelme JSON files written by hand and cohort folders with
``patients.csv`` and ``rois.csv``.
"""
import csv
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[1]

# Identifiers written into phantom DICOM files. No output of the software may
# contain them.
PATIENT_NAME = 'ZZPHANTOM^SECRETNAME'
PATIENT_ID = 'ZZPID-271828'
PHI_STRINGS = ('ZZPHANTOM', 'SECRETNAME', PATIENT_ID)

# Orientation of a sagittal slice: rows run anterior to posterior (+y),
# columns run superior to inferior (-z).
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


# Pixel arrays.


def disc_phantom(height: int = 64,
                 width: int = 64,
                 value: float = 100.0,
                 radius_fraction: float = 0.4) -> np.ndarray:
    """Return a float32 slice: a uniform disc of ``value`` on zero air."""
    rows, cols = np.mgrid[0:height, 0:width]
    radius = radius_fraction * min(height, width)
    inside = ((rows - (height - 1) / 2)**2 +
              (cols - (width - 1) / 2)**2) < radius**2
    return np.where(inside, value, 0.0).astype(np.float32)


def textured_phantom(height: int = 64, width: int = 64,
                     seed: int = 0) -> np.ndarray:
    """Return a disc phantom with a bright block and mild noise inside."""
    array = disc_phantom(height, width)
    array[height // 3:height // 2, width // 3:width // 2] = 180.0
    noise = np.random.default_rng(seed).normal(0, 5, array.shape)
    return np.where(array > 0, array + noise, 0).astype(np.float32)


# Image files.


def write_image(path: Path,
                array: np.ndarray,
                spacing: Optional[Sequence[float]] = None) -> Path:
    """Write an array with SimpleITK (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing([float(value) for value in spacing])
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder: Path,
                       arrays: Sequence[np.ndarray],
                       positions_x: Sequence[float],
                       instance_numbers: Sequence[int],
                       file_names: Sequence[str],
                       pixel_spacing: Tuple[float, float] = (0.5, 0.8)
                       ) -> Path:
    """Write one sagittal MR series, one file per slice, with pydicom.

    Args:
        folder: The series folder, created if missing.
        arrays: The uint16 slices, ``(rows, columns)`` each.
        positions_x: The x (left-right) component of each slice's
            ImagePositionPatient, in mm.
        instance_numbers: The InstanceNumber of each slice.
        file_names: The file name of each slice.
        pixel_spacing: DICOM PixelSpacing: (row spacing, column spacing) in
            mm, that is (y, x) spacing.

    Returns:
        Path: ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = (generate_uid() for _ in range(3))
    for array, position_x, number, name in zip(arrays, positions_x,
                                               instance_numbers, file_names):
        instance_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian

        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID = MRImageStorage
        dataset.SOPInstanceUID = instance_uid
        dataset.Modality = 'MR'
        dataset.PatientName = PATIENT_NAME
        dataset.PatientID = PATIENT_ID
        dataset.InstitutionName = 'ZZPHANTOM HOSPITAL'
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.SeriesNumber = 3
        dataset.InstanceNumber = int(number)
        dataset.ImagePositionPatient = [float(position_x), -20.0, 30.0]
        dataset.ImageOrientationPatient = list(SAGITTAL)
        dataset.PixelSpacing = list(pixel_spacing)
        dataset.SliceThickness = 4.0
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = 'MONOCHROME2'
        dataset.Rows, dataset.Columns = array.shape
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        dataset.PixelData = np.ascontiguousarray(array,
                                                 dtype=np.uint16).tobytes()
        dataset.save_as(folder / name, enforce_file_format=True)
    return folder


# Labelme files.


def rectangle(x0: float, y0: float, x1: float, y1: float,
              label: str = 'lesion') -> dict:
    return {'label': label, 'shape_type': 'rectangle',
            'points': [[x0, y0], [x1, y1]], 'group_id': None, 'flags': {}}


def polygon(points: Sequence[Sequence[float]], label: str = 'lesion') -> dict:
    return {'label': label, 'shape_type': 'polygon',
            'points': [list(point) for point in points], 'group_id': None,
            'flags': {}}


def circle(center: Sequence[float], edge: Sequence[float],
           label: str = 'lesion') -> dict:
    return {'label': label, 'shape_type': 'circle',
            'points': [list(center), list(edge)], 'group_id': None,
            'flags': {}}


def write_labelme(path: Path,
                  shapes: List[dict],
                  height: Optional[int],
                  width: Optional[int],
                  image_path: Optional[str] = None,
                  image_data: Optional[str] = None,
                  bom: bool = False) -> Path:
    """Write a Labelme 5 JSON file with the given shapes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        'version': '5.4.1',
        'flags': {},
        'shapes': shapes,
        'imagePath': image_path,
        'imageData': image_data,
        'imageHeight': height,
        'imageWidth': width,
    }
    text = json.dumps(content, indent=1)
    path.write_bytes(('\ufeff' if bom else '').encode('utf-8') +
                     text.encode('utf-8'))
    return path


# Cohort folders.


def write_table(path: Path, header: Sequence[str],
                rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='', encoding='utf-8') as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


ROI_HEADER = ('roi_id', 'patient_id', 'image', 'dicom', 'annotation',
              'slice_index', 'instance_number')


def write_phantom_cohort(root: Path) -> Dict[str, List[str]]:
    """Write a small two-site cohort of 64x64 phantom slices.

    Site A (development) has four patients, site B (the external test site)
    one. The slices come from a 2-D NIfTI with non-square pixels and two
    ROIs, and from a 3-slice NIfTI read with ``slice_index``. A sagittal
    DICOM series of three slices is read by ``slice_index`` and by
    ``instance_number``, and one PNG is found only through the Labelme
    ``imagePath``.

    Returns:
        dict: the roi_ids of each slice, keyed by a short slice name.
    """
    write_table(root / 'patients.csv', ('patient_id', 'site', 'diagnosis'), [
        ('p1', 'Site A', 'STB'),
        ('p2', 'Site A', 'SM'),
        ('p3', 'Site A', 'STB'),
        ('p4', 'Site A', 'SM'),
        ('p5', 'Site B', 'SM'),
    ])

    # p1: one 2-D slice with two ROIs, pixels 0.6 mm wide and 0.9 mm high.
    write_image(root / 'images' / 'p1.nii.gz', textured_phantom(seed=1),
                spacing=(0.6, 0.9))
    write_labelme(root / 'annotations' / 'p1_a.json',
                  [rectangle(20, 18, 40, 33)], 64, 64)
    write_labelme(root / 'annotations' / 'p1_b.json',
                  [polygon([(30, 30), (50, 30), (40, 50)])], 64, 64)

    # p2: the middle slice of a 3-slice volume.
    volume = np.stack([textured_phantom(seed=seed) for seed in (20, 21, 22)])
    write_image(root / 'images' / 'p2_volume.nii.gz', volume)
    write_labelme(root / 'annotations' / 'p2_a.json',
                  [rectangle(16, 16, 44, 40)], 64, 64)

    # p3: a sagittal DICOM series of three slices, files named out of order.
    slices = [(textured_phantom(seed=seed) * 10).astype(np.uint16)
              for seed in (30, 31, 32)]
    write_dicom_series(root / 'dicom' / 'p3', slices,
                       positions_x=(-4.0, 0.0, 4.0),
                       instance_numbers=(3, 2, 1),
                       file_names=('IM0002.dcm', 'IM0003.dcm', 'IM0001.dcm'),
                       pixel_spacing=(0.7, 0.7))
    write_labelme(root / 'annotations' / 'p3_a.json',
                  [circle((32, 32), (32, 44))], 64, 64)
    write_labelme(root / 'annotations' / 'p3_b.json',
                  [rectangle(10, 20, 30, 50)], 64, 64)

    # p4: no image column; the Labelme file refers to a PNG (Windows path).
    png = np.clip(textured_phantom(seed=40), 0, 255).astype(np.uint8)
    write_image(root / 'images_png' / 'p4.png', png)
    write_labelme(root / 'annotations' / 'p4_a.json',
                  [rectangle(22, 22, 42, 42)], 64, 64,
                  image_path='..\\images_png\\p4.png')

    # p5: the external site.
    write_image(root / 'images' / 'p5.nii.gz', textured_phantom(seed=50))
    write_labelme(root / 'annotations' / 'p5_a.json',
                  [rectangle(24, 20, 44, 44)], 64, 64)

    write_table(root / 'rois.csv', ROI_HEADER, [
        ('p1_a', 'p1', 'images/p1.nii.gz', '', 'annotations/p1_a.json', '',
         ''),
        ('p1_b', 'p1', 'images/p1.nii.gz', '', 'annotations/p1_b.json', '',
         ''),
        ('p2_a', 'p2', 'images/p2_volume.nii.gz', '',
         'annotations/p2_a.json', '1', ''),
        ('p3_a', 'p3', '', 'dicom/p3', 'annotations/p3_a.json', '2', ''),
        ('p3_b', 'p3', '', 'dicom/p3', 'annotations/p3_b.json', '', '1'),
        ('p4_a', 'p4', '', '', 'annotations/p4_a.json', '', ''),
        ('p5_a', 'p5', 'images/p5.nii.gz', '', 'annotations/p5_a.json', '',
         ''),
    ])
    return {
        'p1': ['p1_a', 'p1_b'],
        'p2': ['p2_a'],
        'p3_slice2': ['p3_a'],
        'p3_instance1': ['p3_b'],
        'p4': ['p4_a'],
        'p5': ['p5_a'],
    }


# The command-line tool.


def load_prepare_data_tool() -> ModuleType:
    """Import tools/prepare_data.py, which is a script, not a package."""
    path = REPO_ROOT / 'tools' / 'prepare_data.py'
    spec = importlib.util.spec_from_file_location('prepare_data_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
