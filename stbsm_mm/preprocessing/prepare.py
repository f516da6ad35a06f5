"""Turn a cohort folder into a prepared dataset folder.

The steps, for each source slice: read it (SimpleITK, spacing kept), correct
the bias field (N4), normalise the intensities, and for each ROI outlined on
that slice crop the box around the lesion and write it as a PNG. Then the
patients are split and the annotation files that
:class:`stbsm_mm.datasets.T2CropDataset` reads are written, with a manifest
of every crop's source, box, checksum and the parameters used.

Output layout::

    OUT_DIR/
      crops/<roi_id>.png          8-bit lesion crops
      slices/<roi_id>.png         each whole slice after N4 and
                                  normalisation, named after its first
                                  ROI, for placing Grad-CAM maps
      annotations/<split>.json    train, val, external, all, fold<k>_train,
                                  fold<k>_val (mmengine annotation format)
      splits/patients.csv         patient -> site, label, split, fold
      manifest.json               sources, boxes, checksums, parameters
      quality.json, quality.md    skipped table rows and slices, splits
                                  that lack a class, ignored shapes
      cache/                      per-slice records that let a re-run skip
                                  slices whose inputs and parameters are
                                  unchanged
"""
import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import re
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import SimpleITK as sitk
from mmengine.logging import MMLogger
from tqdm import tqdm

from ..cohort.splits import (EXTERNAL, SPLITS, PatientSplit,
                             check_class_coverage,
                             check_patient_class_coverage, split_patients)
from ..cohort.table import (Cohort, CohortError, Roi, TableProblem,
                            load_cohort)
from ..io.image import DEFAULT_MAX_PIXELS, SliceReadError, read_slice
from ..io.labelme import (LabelmeAnnotation, check_image_size, labelme_image,
                          labelme_image_path, lesion_box, load_labelme)
from ..utils.fileio import (atomic_write_json, atomic_write_text,
                            atomic_writer, sha256_of_file)
from ..version import __version__
from .crop import crop_lesion
from .intensity import normalize_intensity
from .n4 import correct_bias_field, foreground_mask

PathLike = Union[str, Path]

MANIFEST_VERSION = 1
SOURCES = ('auto', 'image', 'dicom')

# Errors of one slice's input that skip the slice instead of the cohort:
# unreadable or inconsistent files (SliceReadError, LabelmeError and
# CohortError are ValueErrors), missing files, and SimpleITK failures.
INPUT_ERRORS = (ValueError, OSError, RuntimeError)


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the preprocessing, recorded in the manifest.

    Args:
        n4: Run N4 bias-field correction.
        shrink_factor: Down-sampling factor of the N4 fit.
        n4_iterations: Maximum N4 iterations per fitting level.
        n4_convergence: N4's convergence threshold per level (0.001 is
            SimpleITK's default). Smaller values run more of the
            iterations; tools/compare_n4.py measures the cost and the
            effect on a cohort's slices.
        normalization: ``'percentile'`` or ``'zscore'``.
        low_percentile: Lower percentile of the percentile window.
        high_percentile: Upper percentile of the percentile window.
        lesion_labels: Labelme labels that count as lesion outlines,
            compared without case and surrounding spaces (``None``: every
            label). Shapes with other labels are ignored.
        crop_mode: ``'largest'`` (box of the largest shape) or ``'union'``.
        margin: Extra border per side, as a fraction of the box size.
        square_pixels: Resample crops to square pixels.
        source: Which column supplies the slice: ``'image'``, ``'dicom'``
            or ``'auto'`` (``image`` when given, else ``dicom``, else the
            image the Labelme file refers to).
        max_pixels: The largest number of pixels a source file may have
            (all slices of a volume); larger files are skipped with an
            error. ``None`` sets no limit. It does not change the crops,
            so it is not part of the cache key.
    """

    n4: bool = True
    shrink_factor: int = 8
    n4_iterations: Tuple[int, ...] = (50, 50, 30, 20)
    n4_convergence: float = 1e-3
    normalization: str = 'percentile'
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    lesion_labels: Optional[Tuple[str, ...]] = None
    crop_mode: str = 'largest'
    margin: float = 0.0
    square_pixels: bool = True
    source: str = 'auto'
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f'source={self.source!r}; use one of {SOURCES}.')
        if self.crop_mode not in ('largest', 'union'):
            raise ValueError(f"crop_mode={self.crop_mode!r}; use 'largest' "
                             "or 'union'.")
        if self.margin < 0:
            raise ValueError(f'margin={self.margin}; use a fraction >= 0.')

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class _SliceTask:
    """One source slice and the ROIs outlined on it."""

    key: str
    source: Optional[str]
    slice_index: Optional[int]
    instance_number: Optional[int]
    rois: List[Tuple[str, str, str]]  # (roi_id, annotation path, crop path)


def prepare_cohort(cohort_dir: PathLike,
                   out_dir: PathLike,
                   config: PreprocessConfig = PreprocessConfig(),
                   external_sites: Sequence[str] = (),
                   val_fraction: float = 0.2,
                   n_folds: int = 5,
                   seed: int = 0,
                   classes: Optional[Sequence[str]] = None,
                   workers: Optional[int] = None,
                   progress: bool = True,
                   strict: bool = False) -> dict:
    """Preprocess a cohort and write the prepared dataset folder.

    Args:
        cohort_dir: Folder with ``patients.csv`` and ``rois.csv``.
        out_dir: Output folder; created if missing. Finished crops in it
            are reused when their inputs and parameters are unchanged.
        config: Preprocessing parameters.
        external_sites: Sites whose patients form the external test set.
        val_fraction: Fraction of development patients for validation.
        n_folds: Number of cross-validation folds (0: none).
        seed: Seed of the patient splits.
        classes: Class names in index order (default: from the data).
        workers: Worker processes (default: all CPU cores).
        progress: Show a progress bar.
        strict: Stop at the first row of ``patients.csv`` or ``rois.csv``
            or slice that cannot be used, and when a training split has no
            ROI of a class. By default such a row or slice is skipped, with
            the patients and ROIs it affects, and it is listed with its
            error in ``out_dir/quality.json`` and ``out_dir/quality.md``. A
            training split without a class is listed there as well.

    Returns:
        dict: the manifest that was written to ``out_dir/manifest.json``.

    Raises:
        CohortError: a table or column is missing, an option is invalid,
            or no ROI is left to prepare. In strict mode also at the first
            invalid table row, or when a training split has no ROI of a
            class.
        LabelmeError, SliceReadError: in strict mode, the first slice that
            cannot be prepared.

    Examples:
        >>> prepare_cohort('my_cohort', 'data/my_prepared',
        ...                external_sites=['Hospital C'])  # doctest: +SKIP
    """
    logger = MMLogger.get_current_instance()
    cohort_dir, out_dir = Path(cohort_dir), Path(out_dir)
    if out_dir.resolve() == cohort_dir.resolve():
        raise CohortError(f'{out_dir}: the output folder must differ from the '
                          'cohort folder.')

    # Step 1: the tables and the patient splits.
    cohort = load_cohort(cohort_dir, classes, strict=strict)
    for problem in cohort.problems:
        logger.warning(f'Table row {problem.action}: {problem.message}')
    n_rois = len(cohort.rois) + cohort.skipped_roi_rows
    report = _QualityReport(out_dir, n_rois, cohort.problems)
    if not cohort.rois:
        report.write(0)
        raise CohortError(
            f'{cohort_dir}: no row of rois.csv can be used; see the errors '
            f'above and {out_dir / "quality.md"}.')
    split = split_patients(cohort, external_sites, val_fraction, n_folds,
                           seed)
    logger.info(
        f'Cohort {cohort_dir}: {len(cohort.patients)} patients, '
        f'{len(cohort.rois)} ROIs, classes {list(cohort.classes)}; '
        + ', '.join(f'{name} {len(split.patients_in(name))} patients'
                    for name in SPLITS))

    # Step 2: crops, one task per source slice, reusing cached slices.
    crop_names = _crop_names(cohort.rois)
    tasks = _slice_tasks(cohort, config, crop_names, cohort_dir, strict,
                         report.problems)
    records = _run_tasks(tasks, cohort_dir, out_dir, config, workers,
                         progress, strict, report.problems)
    report.notes = [note for record in records.values()
                    for note in record.get('notes', [])]
    if not records:
        report.write(0)
        raise CohortError(
            f'{cohort_dir}: no ROI could be prepared; see the errors above '
            f'and {out_dir / "quality.md"}.')

    # Step 3: every split should contain every class. A training split
    # without one stops only in strict mode, so that a smoke test on a
    # cohort of two development patients still runs.
    samples = _samples(cohort, split, records)
    try:
        report.split_warnings = check_class_coverage(
            _labels_by_split(samples, split.n_folds), cohort.classes,
            training_error=strict)
    except CohortError as error:
        report.split_warnings = [str(error)]
        report.write(len(records))
        raise
    report.split_warnings += check_patient_class_coverage(
        _patient_labels_by_split(cohort, samples, split.n_folds),
        _labels_by_split(samples, split.n_folds), cohort.classes)
    for warning in report.split_warnings:
        logger.warning(warning)

    # Step 4: annotation files, split table and manifest.
    manifest = _write_outputs(cohort, split, config, records, samples,
                              out_dir)
    report.write(len(records))
    logger.info(f'Prepared {len(records)} crops in {out_dir}.')
    return manifest


def _crop_names(rois: Sequence[Roi]) -> Dict[str, str]:
    """Map each roi_id to a file-safe, unique crop file name."""
    names: Dict[str, str] = {}
    used = set()
    for roi in rois:
        safe = re.sub(r'[^0-9A-Za-z._-]', '_', roi.roi_id).strip('.') or 'roi'
        name = f'{safe}.png'
        if name.lower() in used:
            digest = hashlib.sha256(roi.roi_id.encode()).hexdigest()[:8]
            name = f'{safe}_{digest}.png'
        used.add(name.lower())
        names[roi.roi_id] = name
    return names


def _slice_tasks(cohort: Cohort, config: PreprocessConfig,
                 crop_names: Dict[str, str], cohort_dir: Path, strict: bool,
                 problems: List[dict]) -> List[_SliceTask]:
    """Group the ROIs by source slice.

    A ROI without the column that ``config.source`` requests is appended
    to ``problems``, unless ``strict`` is set, which raises.
    """
    grouped: 'OrderedDict[tuple, List[Roi]]' = OrderedDict()
    for roi in cohort.rois:
        try:
            source = _source_of(roi, config.source)
        except CohortError as error:
            if strict:
                raise
            problems.append({
                'roi_ids': [roi.roi_id], 'source': None,
                'annotations': [_relative(roi.annotation, cohort_dir)],
                'error': type(error).__name__, 'message': str(error)})
            continue
        key = (str(source) if source else f'labelme:{roi.annotation}',
               roi.slice_index, roi.instance_number)
        grouped.setdefault(key, []).append(roi)

    tasks = []
    for (source, slice_index, instance_number), rois in grouped.items():
        tasks.append(
            _SliceTask(
                key='',
                source=None if source.startswith('labelme:') else source,
                slice_index=slice_index,
                instance_number=instance_number,
                rois=[(roi.roi_id, str(roi.annotation),
                       f'crops/{crop_names[roi.roi_id]}') for roi in rois]))
    return tasks


def _source_of(roi: Roi, preference: str) -> Optional[Path]:
    if preference == 'image':
        if roi.image is None:
            raise CohortError(
                f'ROI {roi.roi_id!r} has no image path, but --source image was'
                ' requested. Fill the image column or use --source auto.')
        return roi.image
    if preference == 'dicom':
        if roi.dicom is None:
            raise CohortError(
                f'ROI {roi.roi_id!r} has no dicom folder, but --source dicom '
                'was requested. Fill the dicom column or use --source auto.')
        return roi.dicom
    return roi.image or roi.dicom


def _run_tasks(tasks: List[_SliceTask], cohort_dir: Path, out_dir: Path,
               config: PreprocessConfig, workers: Optional[int],
               progress: bool, strict: bool,
               problems: List[dict]) -> Dict[str, dict]:
    """Process every slice task; return crop records keyed by roi_id.

    A slice that fails is appended to ``problems`` and its ROIs get no
    record, unless ``strict`` is set, which re-raises the error.
    """
    logger = MMLogger.get_current_instance()
    params = config.to_dict()
    params.pop('max_pixels')

    def skip(task: _SliceTask, error: Exception) -> None:
        if strict:
            raise error
        problems.append(_problem(task, error, cohort_dir))
        logger.warning(f'Skipped {len(task.rois)} ROI(s) '
                       f'{[roi for roi, _, _ in task.rois]}: {error}')

    keyed = []
    for task in tasks:
        # Hashing reads the Labelme files, which may be invalid.
        try:
            task.key = _task_key(task, params, cohort_dir)
        except INPUT_ERRORS as error:
            skip(task, error)
            continue
        keyed.append(task)

    records: Dict[str, dict] = {}
    pending = []
    for task in keyed:
        cached = _load_cached(out_dir, task)
        if cached is None:
            pending.append(task)
        else:
            records.update(cached)

    logger.info(f'{len(keyed)} slices: {len(keyed) - len(pending)} unchanged '
                f'(reused), {len(pending)} to process.')
    if not pending:
        return records

    workers = workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(pending)))
    bar = tqdm(total=len(pending), desc='prepare', unit='slice',
               disable=not progress)
    def collect(task: _SliceTask, run) -> None:
        try:
            records.update(run())
        except INPUT_ERRORS as error:
            skip(task, error)
        bar.update()

    if workers == 1:
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        _init_worker()
        try:
            for task in pending:
                collect(task, lambda task=task: _process_task(
                    task, cohort_dir, out_dir, config))
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    else:
        context = multiprocessing.get_context('fork')
        with ProcessPoolExecutor(workers, mp_context=context,
                                 initializer=_init_worker) as pool:
            futures = [
                pool.submit(_process_task, task, cohort_dir, out_dir, config)
                for task in pending
            ]
            for task, future in zip(pending, futures):
                collect(task, future.result)
    bar.close()
    return records


def _problem(task: _SliceTask, error: Exception, cohort_dir: Path) -> dict:
    """Describe a failed slice for the data-quality report."""
    return {
        'roi_ids': [roi_id for roi_id, _, _ in task.rois],
        'source': _relative(task.source, cohort_dir),
        'annotations': [_relative(path, cohort_dir)
                        for _, path, _ in task.rois],
        'error': type(error).__name__,
        'message': str(error),
    }


def _init_worker() -> None:
    # One ITK thread per process, in every mode: N4's multi-threaded sums
    # depend on the thread count, so this makes crops independent of the
    # machine and of --workers. The processes already use every core.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _task_key(task: _SliceTask, params: dict, cohort_dir: Path) -> str:
    """Hash the task's input files' checksums and the parameters."""
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True).encode())
    digest.update(f'{task.slice_index}|{task.instance_number}'.encode())
    if task.source:
        for path in _source_files(Path(task.source)):
            digest.update(sha256_of_file(path).encode())
    else:
        # The slice is the image that the Labelme file refers to.
        image = _labelme_image_file(task.rois[0][1], cohort_dir)
        if image is not None:
            digest.update(sha256_of_file(image).encode())
    for roi_id, annotation, crop in task.rois:
        digest.update(f'{roi_id}|{crop}|'.encode())
        digest.update(sha256_of_file(annotation).encode()
                      if os.path.isfile(annotation) else b'missing')
    return digest.hexdigest()


def _labelme_image_file(annotation_path: str,
                        cohort_dir: Path) -> Optional[Path]:
    """Return the file that a Labelme imagePath names, unless embedded."""
    annotation = load_labelme(annotation_path)
    if annotation.image_data:
        return None
    path = labelme_image_path(annotation, cohort_dir)
    return path if path is not None and path.is_file() else None


def _source_files(source: Path) -> List[Path]:
    if source.is_dir():
        return sorted(path for path in source.rglob('*') if path.is_file())
    return [source] if source.exists() else []


def _cache_path(out_dir: Path, task: _SliceTask) -> Path:
    return out_dir / 'cache' / f'{task.key}.json'


def _load_cached(out_dir: Path, task: _SliceTask) -> Optional[dict]:
    """Return the task's records if its crops are finished and intact."""
    path = _cache_path(out_dir, task)
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    for record in records.values():
        for name in ('crop', 'slice'):
            if name not in record:
                return None
            path = out_dir / record[name]
            if (not path.is_file()
                    or sha256_of_file(path) != record[f'{name}_sha256']):
                return None
    return records


def _process_task(task: _SliceTask, cohort_dir: Path, out_dir: Path,
                  config: PreprocessConfig) -> Dict[str, dict]:
    """Preprocess one slice and write the crops of its ROIs."""
    # Read the slice.
    annotations = [load_labelme(path) for _, path, _ in task.rois]
    if task.source:
        image = read_slice(task.source, task.slice_index,
                           task.instance_number,
                           max_pixels=config.max_pixels)
    else:
        _check_labelme_image_size(annotations[0], config.max_pixels)
        image = sitk.Cast(
            sitk.GetImageFromArray(labelme_image(annotations[0],
                                                 cohort_dir)),
            sitk.sitkFloat32)
    width, height = image.GetSize()
    for annotation in annotations:
        check_image_size(annotation, height, width)

    # Correct the bias field and normalise the intensities.
    image, _ = preprocess_slice(image, config)

    # Keep the whole normalised slice, so that Grad-CAM maps of its crops
    # can be shown in place. It is named after a ROI, never after the
    # source file, whose name may identify the patient.
    slice_rel = 'slices/' + Path(task.rois[0][2]).name
    slice_path = out_dir / slice_rel
    with atomic_writer(slice_path) as tmp:
        sitk.WriteImage(image, str(tmp))
    slice_sha256 = sha256_of_file(slice_path)

    # Crop each ROI and write it.
    records = {}
    for (roi_id, annotation_path, crop_rel), annotation in zip(
            task.rois, annotations):
        notes: List[str] = []
        box = lesion_box(annotation, height, width, config.lesion_labels,
                         config.crop_mode, config.margin, notes)
        crop = crop_lesion(image, box, config.square_pixels)
        crop_path = out_dir / crop_rel
        with atomic_writer(crop_path) as tmp:
            sitk.WriteImage(crop, str(tmp))
        records[roi_id] = {
            'source': _relative(task.source, cohort_dir),
            'source_sha256': _source_checksum(task.source),
            'slice_index': task.slice_index,
            'instance_number': task.instance_number,
            'annotation': _relative(annotation_path, cohort_dir),
            'annotation_sha256': sha256_of_file(annotation_path),
            'source_size': [width, height],
            'source_spacing': list(image.GetSpacing()),
            'slice': slice_rel,
            'slice_sha256': slice_sha256,
            'box': list(box),
            'crop': crop_rel,
            'crop_size': list(crop.GetSize()),
            'crop_spacing': list(crop.GetSpacing()),
            'crop_sha256': sha256_of_file(crop_path),
            # Ignored shapes, for the quality report; not in the manifest.
            'notes': [f'ROI {roi_id}: {note}' for note in notes],
        }
    atomic_write_json(_cache_path(out_dir, task), records)
    return records


def preprocess_slice(image: sitk.Image,
                     config: PreprocessConfig) -> Tuple[sitk.Image,
                                                        sitk.Image]:
    """Correct the bias field of a slice and normalise its intensities.

    The steps of :func:`prepare_cohort` and of ``stbsm-infer`` for one
    slice. N4 runs on one ITK thread, because its multi-threaded sums
    depend on the thread count.

    Args:
        image: The float32 slice with its spacing.
        config: The preprocessing parameters.

    Returns:
        tuple: the normalised uint8 slice and the foreground mask.
    """
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        if config.n4:
            image, mask = correct_bias_field(
                image, shrink_factor=config.shrink_factor,
                iterations=config.n4_iterations,
                convergence_threshold=config.n4_convergence)
        else:
            mask = foreground_mask(image)
        image = normalize_intensity(image, mask, config.normalization,
                                    config.low_percentile,
                                    config.high_percentile)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return image, mask


def _check_labelme_image_size(annotation: LabelmeAnnotation,
                              max_pixels: Optional[int]) -> None:
    """Apply the pixel-count limit to a Labelme image before decoding it.

    The size comes from ``imageHeight`` and ``imageWidth``.
    NOTE: a Labelme file without them is decoded without this check.
    """
    height, width = annotation.image_height, annotation.image_width
    if max_pixels is None or not height or not width:
        return
    if height * width > max_pixels:
        raise SliceReadError(
            f'{annotation.path}: its image is {width} x {height} = '
            f'{height * width} pixels, more than the limit '
            f'max_pixels={max_pixels}. Check that this is the MR slice you '
            'meant; if it is, raise max_pixels.')


def _source_checksum(source: Optional[str]) -> Optional[str]:
    if not source:
        return None
    files = _source_files(Path(source))
    if len(files) == 1:
        return sha256_of_file(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(sha256_of_file(path).encode())
    return digest.hexdigest()


def _relative(path: Optional[PathLike], root: Path) -> Optional[str]:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _samples(cohort: Cohort, split: PatientSplit,
             records: Dict[str, dict]) -> List[dict]:
    """Return the annotation entry of every prepared ROI."""
    samples = []
    for roi in cohort.rois:
        if roi.roi_id not in records:
            continue
        samples.append({
            'img_path': records[roi.roi_id]['crop'],
            'gt_label': cohort.classes.index(roi.label),
            'label': roi.label,
            'roi_id': roi.roi_id,
            'patient_id': roi.patient_id,
            'site': cohort.site_of(roi),
            'split': split.split[roi.patient_id],
            'fold': split.fold.get(roi.patient_id),
        })
    return samples


def _labels_by_split(samples: List[dict],
                     n_folds: int) -> Dict[str, List[str]]:
    """Return the labels of each split and fold file's samples."""
    labels = {name: [s['label'] for s in samples if s['split'] == name]
              for name in SPLITS}
    for fold in range(n_folds):
        labels[f'fold{fold}_train'] = [
            s['label'] for s in samples
            if s['split'] != EXTERNAL and s['fold'] != fold]
        labels[f'fold{fold}_val'] = [s['label'] for s in samples
                                     if s['fold'] == fold]
    return labels


def _patient_labels_by_split(cohort: Cohort, samples: List[dict],
                             n_folds: int) -> Dict[str, List[str]]:
    """Return the labels of the patients of each split and fold file."""
    def labels(selected) -> List[str]:
        patients = sorted({s['patient_id'] for s in selected})
        return [cohort.patient_label(patient) for patient in patients]

    by_split = {name: labels([s for s in samples if s['split'] == name])
                for name in SPLITS}
    for fold in range(n_folds):
        by_split[f'fold{fold}_val'] = labels(
            [s for s in samples if s['fold'] == fold])
    return by_split


def _write_outputs(cohort: Cohort, split: PatientSplit,
                   config: PreprocessConfig, records: Dict[str, dict],
                   samples: List[dict], out_dir: Path) -> dict:
    classes = list(cohort.classes)

    def write(name: str, selected: List[dict]) -> None:
        atomic_write_json(out_dir / 'annotations' / f'{name}.json', {
            'metainfo': {'classes': classes, 'split': name},
            'data_list': selected
        })

    write('all', samples)
    for name in SPLITS:
        write(name, [s for s in samples if s['split'] == name])
    for fold in range(split.n_folds):
        write(f'fold{fold}_train',
              [s for s in samples
               if s['split'] != EXTERNAL and s['fold'] != fold])
        write(f'fold{fold}_val', [s for s in samples if s['fold'] == fold])
    _write_patient_table(cohort, split, out_dir / 'splits' / 'patients.csv')

    manifest = {
        'format_version': MANIFEST_VERSION,
        'stbsm_mm_version': __version__,
        'created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'cohort': str(cohort.root.resolve()),
        'classes': classes,
        'preprocessing': config.to_dict(),
        'split': {
            'seed': split.seed,
            'val_fraction': split.val_fraction,
            'n_folds': split.n_folds,
            'external_sites': split.external_sites,
            'patients': {name: len(split.patients_in(name))
                         for name in SPLITS},
            'rois': {name: sum(s['split'] == name for s in samples)
                     for name in SPLITS},
        },
        'rois': [
            dict(roi_id=s['roi_id'], patient_id=s['patient_id'],
                 site=s['site'], label=s['label'], split=s['split'],
                 fold=s['fold'],
                 **{key: value for key, value in records[s['roi_id']].items()
                    if key != 'notes'}) for s in samples
        ],
    }
    atomic_write_json(out_dir / 'manifest.json', manifest)
    return manifest


def _write_patient_table(cohort: Cohort, split: PatientSplit,
                         path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['patient_id', 'site', 'label', 'split', 'fold', 'rois'])
    for patient_id in sorted(split.split):
        writer.writerow([
            patient_id, cohort.patients[patient_id].site,
            cohort.patient_label(patient_id), split.split[patient_id],
            '' if split.fold.get(patient_id) is None else
            split.fold[patient_id],
            sum(roi.patient_id == patient_id for roi in cohort.rois)
        ])
    atomic_write_text(path, buffer.getvalue())


class _QualityReport:
    """The data-quality findings of one run, gathered step by step."""

    def __init__(self, out_dir: Path, n_rois: int,
                 table_problems: List[TableProblem]):
        self.out_dir = out_dir
        self.n_rois = n_rois
        self.table_problems = table_problems
        self.problems: List[dict] = []
        self.split_warnings: List[str] = []
        self.notes: List[str] = []

    def write(self, n_prepared: int) -> None:
        write_quality_report(
            self.out_dir, self.n_rois, n_prepared, self.problems,
            table_problems=[problem.to_dict()
                            for problem in self.table_problems],
            split_warnings=self.split_warnings,
            notes=self.notes)


def write_quality_report(out_dir: Path,
                         n_rois: int,
                         n_prepared: int,
                         problems: List[dict],
                         table_problems: Sequence[dict] = (),
                         split_warnings: Sequence[str] = (),
                         notes: Sequence[str] = ()) -> None:
    """Write ``quality.json`` and a readable ``quality.md``.

    Args:
        out_dir: The prepared dataset folder.
        n_rois: Number of rows of ``rois.csv``.
        n_prepared: Number of ROIs prepared.
        problems: Slices that could not be prepared: ``roi_ids``,
            ``source``, ``annotations``, ``error`` and ``message``.
        table_problems: Rows of ``patients.csv`` or ``rois.csv`` that were
            skipped or ignored, as :meth:`TableProblem.to_dict` gives them.
        split_warnings: Splits without a sample of some class.
        notes: Shapes ignored in Labelme files whose ROI was prepared.

    Examples:
        >>> write_quality_report(Path('out'), 3, 3, [])  # doctest: +SKIP
    """
    atomic_write_json(out_dir / 'quality.json', {
        'n_rois': n_rois,
        'n_prepared': n_prepared,
        'n_skipped': n_rois - n_prepared,
        'table_problems': list(table_problems),
        'problems': problems,
        'split_warnings': list(split_warnings),
        'notes': list(notes),
    })

    lines = [
        '# Data quality', '',
        f'{n_prepared} of {n_rois} ROIs prepared; '
        f'{n_rois - n_prepared} skipped.', ''
    ]
    if table_problems:
        lines += ['## Table rows', '',
                  '| file | line | column | value | outcome | problem |',
                  '|---|---|---|---|---|---|']
        for problem in table_problems:
            lines.append(
                f'| {problem["table"]} | {problem["line"]} | '
                f'{problem["column"] or ""} | '
                f'{_cell(problem["value"])} | {_outcome(problem)} | '
                f'{_cell(problem["message"])} |')
        lines.append('')
    if problems:
        lines += ['## Slices', '']
        for problem in problems:
            lines.append(f'- ROIs {", ".join(problem["roi_ids"])} '
                         f'(source {problem["source"]}): {problem["error"]}: '
                         f'{problem["message"]}')
        lines.append('')
    if split_warnings:
        lines += ['## Splits', '']
        lines += [f'- {warning}' for warning in split_warnings]
        lines.append('')
    if notes:
        lines += ['## Notes', '']
        lines += [f'- {note}' for note in notes]
        lines.append('')
    if not (table_problems or problems or split_warnings or notes):
        lines += ['No problems found.', '']
    atomic_write_text(out_dir / 'quality.md', '\n'.join(lines))


def _outcome(problem: dict) -> str:
    """Describe what a table problem left out, for quality.md."""
    if problem['action'] == 'ignored':
        return 'repeated row ignored'
    parts = []
    if problem['patient_ids']:
        parts.append('patients ' + ', '.join(problem['patient_ids']))
    if problem['roi_ids']:
        parts.append('ROIs ' + ', '.join(problem['roi_ids']))
    return 'skipped ' + ('; '.join(parts) if parts else 'row')


def _cell(text: Optional[str]) -> str:
    """Escape a value for a Markdown table cell."""
    return '' if text is None else str(text).replace('|', '\\|').replace(
        '\n', ' ')
