"""Load and check a cohort folder: ``patients.csv`` and ``rois.csv``.

``patients.csv`` has one row per patient: ``patient_id``, ``site`` and,
optionally, ``diagnosis`` (a class name such as ``STB`` or ``SM``); other
columns (age, sex, ...) are kept as they are.

``rois.csv`` has one row per lesion image: ``roi_id``, ``patient_id``, the
slice as ``image`` (a NIfTI, MHA, PNG or JPEG path) and/or ``dicom`` (a
folder holding one series), the Labelme ``annotation`` path, optional
``slice_index`` or ``instance_number`` for multi-slice sources, and an
optional ``label`` that overrides the patient's diagnosis for that ROI.
Paths are relative to the cohort folder. Ids are strings: ``007`` and ``7``
are different patients.
"""
import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..classes import DEFAULT_CLASSES

PathLike = Union[str, Path]

PATIENT_COLUMNS = ('patient_id', 'site')
ROI_COLUMNS = ('roi_id', 'patient_id', 'annotation')


class CohortError(ValueError):
    """The cohort tables are missing, malformed or inconsistent."""


@dataclass
class Patient:
    """One row of ``patients.csv``."""

    patient_id: str
    site: str
    diagnosis: Optional[str]
    extra: Dict[str, str] = field(default_factory=dict)


@dataclass
class Roi:
    """One row of ``rois.csv`` with its paths resolved and its label set."""

    roi_id: str
    patient_id: str
    label: str
    annotation: Path
    image: Optional[Path] = None
    dicom: Optional[Path] = None
    slice_index: Optional[int] = None
    instance_number: Optional[int] = None
    extra: Dict[str, str] = field(default_factory=dict)


@dataclass
class Cohort:
    """A checked cohort: its folder, patients, ROIs and class names."""

    root: Path
    patients: Dict[str, Patient]
    rois: List[Roi]
    classes: Tuple[str, ...]

    def site_of(self, roi: Roi) -> str:
        return self.patients[roi.patient_id].site

    def patient_label(self, patient_id: str) -> str:
        """Return the patient's diagnosis, or the most frequent ROI label.

        Ties between ROI labels go to the class listed first in
        :attr:`classes`.
        """
        diagnosis = self.patients[patient_id].diagnosis
        if diagnosis:
            return diagnosis
        counts = Counter(roi.label for roi in self.rois
                         if roi.patient_id == patient_id)
        return max(self.classes, key=lambda name: (counts[name],
                                                   -self.classes.index(name)))


def load_cohort(root: PathLike,
                classes: Optional[Sequence[str]] = None) -> Cohort:
    """Read ``patients.csv`` and ``rois.csv`` from a cohort folder.

    Args:
        root: The cohort folder.
        classes: Class names in index order. ``None`` takes
            ``('STB', 'SM')`` when every label is one of them, and the
            sorted label names otherwise.

    Returns:
        Cohort: the checked tables.

    Raises:
        CohortError: a table or column is missing, an id is duplicated or
            unknown, a ROI has no label, or a label is not in ``classes``.

    Examples:
        >>> cohort = load_cohort('tests/data/cohort')  # doctest: +SKIP
        >>> cohort.classes  # doctest: +SKIP
        ('STB', 'SM')
    """
    root = Path(root)
    patient_rows = _read_table(root / 'patients.csv', PATIENT_COLUMNS)
    roi_rows = _read_table(root / 'rois.csv', ROI_COLUMNS)

    patients = _parse_patients(patient_rows, root / 'patients.csv')
    rois = _parse_rois(roi_rows, patients, root)

    labels = [roi.label for roi in rois]
    resolved = resolve_classes(labels, classes)
    unknown = sorted(set(labels) - set(resolved))
    if unknown:
        raise CohortError(
            f'{root}: labels {unknown} are not among the classes '
            f'{list(resolved)}. Fix the diagnosis/label columns or pass the '
            'class names (--classes).')
    return Cohort(root=root, patients=patients, rois=rois,
                  classes=tuple(resolved))


def resolve_classes(labels: Sequence[str],
                    classes: Optional[Sequence[str]] = None
                    ) -> Tuple[str, ...]:
    """Return the class names in index order.

    Given ``classes`` win. Otherwise ``('STB', 'SM')`` is used when every
    label is one of those, else the sorted set of labels.

    Examples:
        >>> resolve_classes(['SM', 'STB'])
        ('STB', 'SM')
        >>> resolve_classes(['no_modic', 'modic'])
        ('modic', 'no_modic')
    """
    if classes is not None:
        classes = tuple(str(name) for name in classes)
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise CohortError(f'classes={list(classes)}; give two or more '
                              'distinct class names.')
        return classes
    found = set(labels)
    if found <= set(DEFAULT_CLASSES):
        return DEFAULT_CLASSES
    return tuple(sorted(found))


def _read_table(path: Path, required: Sequence[str]) -> List[Dict[str, str]]:
    if not path.is_file():
        raise CohortError(
            f'{path}: not found. A cohort folder contains patients.csv and '
            'rois.csv; see the README for their columns.')
    with open(path, newline='', encoding='utf-8-sig') as file:
        reader = csv.DictReader(file)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in required if name not in header]
        if missing:
            raise CohortError(
                f'{path}: missing column(s) {missing}; found {header}.')
        rows = []
        for row in reader:
            if None in row:
                # csv.DictReader stores surplus fields under the key None.
                raise CohortError(
                    f'{path}, line {reader.line_num}: {len(header)} columns '
                    f'in the header but {len(header) + len(row[None])} '
                    'fields in this row. Remove the extra fields (a '
                    'trailing comma) or quote values that contain commas.')
            rows.append({key.strip(): (value or '').strip()
                         for key, value in row.items()})
    if not rows:
        raise CohortError(f'{path}: the table has no rows.')
    return rows


def _parse_patients(rows: List[Dict[str, str]],
                    path: Path) -> Dict[str, Patient]:
    patients: Dict[str, Patient] = {}
    for line, row in enumerate(rows, start=2):
        patient_id = row['patient_id']
        if not patient_id:
            raise CohortError(f'{path}, line {line}: empty patient_id.')
        if not row['site']:
            raise CohortError(
                f'{path}, line {line}: patient {patient_id!r} has no site.')
        if patient_id in patients:
            raise CohortError(
                f'{path}, line {line}: patient_id {patient_id!r} appears '
                'twice. Keep one row per patient; a patient belongs to one '
                'site and has one diagnosis.')
        extra = {key: value for key, value in row.items()
                 if key not in ('patient_id', 'site', 'diagnosis')}
        patients[patient_id] = Patient(patient_id, row['site'],
                                       row.get('diagnosis') or None, extra)
    return patients


def _parse_rois(rows: List[Dict[str, str]], patients: Dict[str, Patient],
                root: Path) -> List[Roi]:
    path = root / 'rois.csv'
    rois: List[Roi] = []
    seen = set()
    known = ('roi_id', 'patient_id', 'label', 'annotation', 'image', 'dicom',
             'slice_index', 'instance_number')
    for line, row in enumerate(rows, start=2):
        roi_id, patient_id = row['roi_id'], row['patient_id']
        where = f'{path}, line {line}'
        if not roi_id:
            raise CohortError(f'{where}: empty roi_id.')
        if roi_id in seen:
            raise CohortError(
                f'{where}: roi_id {roi_id!r} appears twice. Give each lesion '
                'image its own id.')
        seen.add(roi_id)
        if patient_id not in patients:
            raise CohortError(
                f'{where}: patient_id {patient_id!r} of ROI {roi_id!r} is not '
                'in patients.csv. Add the patient or fix the id (ids are '
                'compared as text: 007 and 7 differ).')

        label = row.get('label') or patients[patient_id].diagnosis
        if not label:
            raise CohortError(
                f'{where}: ROI {roi_id!r} has no label, and patient '
                f'{patient_id!r} has no diagnosis. Fill one of them.')
        image = _optional_path(root, row.get('image'))
        dicom = _optional_path(root, row.get('dicom'))
        if not row['annotation']:
            raise CohortError(f'{where}: ROI {roi_id!r} has no annotation.')

        rois.append(
            Roi(roi_id=roi_id,
                patient_id=patient_id,
                label=label,
                annotation=root / row['annotation'],
                image=image,
                dicom=dicom,
                slice_index=_optional_int(row.get('slice_index'), where,
                                          'slice_index'),
                instance_number=_optional_int(row.get('instance_number'),
                                              where, 'instance_number'),
                extra={key: value for key, value in row.items()
                       if key not in known}))
    return rois


def _optional_path(root: Path, value: Optional[str]) -> Optional[Path]:
    if not value:
        return None
    return root / value.replace('\\', '/')


def _optional_int(value: Optional[str], where: str,
                  column: str) -> Optional[int]:
    if value is None or value == '':
        return None
    # pandas writes an integer column with empty cells as '2.0', so whole
    # floats are accepted.
    try:
        number = float(value)
    except ValueError as error:
        raise CohortError(
            f'{where}: {column}={value!r} is not an integer.') from error
    if not number.is_integer():
        raise CohortError(
            f'{where}: {column}={value!r} is not an integer. Give the '
            'whole-number index of the outlined slice.')
    return int(number)
