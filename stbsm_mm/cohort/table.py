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

Both tables may be UTF-8 (with or without a byte-order mark) or GBK/GB18030,
the encoding Excel on Chinese Windows saves CSV files in. Rows whose cells
are all empty are ignored.

Two kinds of problems are told apart. A structural problem (a missing
table or column, a table that cannot be decoded) always raises
:class:`CohortError`. A row-level problem (an unknown or duplicate id, a
patient with two sites or two diagnoses, a missing label) raises it too in
strict mode. Otherwise the row, and the patient or ROIs it affects, is
skipped and described in :attr:`Cohort.problems`.
"""
import csv
import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..classes import DEFAULT_CLASSES

PathLike = Union[str, Path]

PATIENT_COLUMNS = ('patient_id', 'site')
ROI_COLUMNS = ('roi_id', 'patient_id', 'annotation')
ROI_KNOWN_COLUMNS = ('roi_id', 'patient_id', 'label', 'annotation', 'image',
                     'dicom', 'slice_index', 'instance_number')

# Encodings tried in order: UTF-8, then the GB18030 superset of GBK.
TABLE_ENCODINGS = ('utf-8-sig', 'gb18030')

# One data row: its line number in the file and its cells by column name.
Row = Tuple[int, Dict[str, str]]


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
class TableProblem:
    """A row-level problem of a cohort table and what it skipped.

    Attributes:
        table: File name, ``patients.csv`` or ``rois.csv``.
        line: Line number of the row in that file (the header is line 1).
        column: The column holding the invalid value, if one does.
        value: The invalid value.
        message: The full error: file, line, value and how to fix it.
        patient_ids: Patients skipped because of this row.
        roi_ids: ROIs skipped because of this row.
        action: ``'skipped'`` when the row, and the patients and ROIs
            listed, are left out, or ``'ignored'`` when the row only
            repeats an earlier one, so nothing is lost.
    """

    table: str
    line: int
    column: Optional[str]
    value: Optional[str]
    message: str
    patient_ids: List[str] = field(default_factory=list)
    roi_ids: List[str] = field(default_factory=list)
    action: str = 'skipped'

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Cohort:
    """A checked cohort: its folder, patients, ROIs and class names.

    ``problems`` lists the rows skipped by a non-strict
    :func:`load_cohort`, and ``skipped_roi_rows`` counts the rows of
    ``rois.csv`` that are not in ``rois``.
    """

    root: Path
    patients: Dict[str, Patient]
    rois: List[Roi]
    classes: Tuple[str, ...]
    problems: List[TableProblem] = field(default_factory=list)
    skipped_roi_rows: int = 0

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


class _ProblemLog:
    """Collects row-level problems, or raises the first in strict mode."""

    def __init__(self, root: Path, strict: bool):
        self.root = root
        self.strict = strict
        self.problems: List[TableProblem] = []

    def add(self,
            table: str,
            line: int,
            column: Optional[str],
            value: Optional[str],
            text: str,
            patient_ids: Sequence[str] = (),
            roi_ids: Sequence[str] = (),
            action: str = 'skipped') -> TableProblem:
        problem = TableProblem(
            table=table, line=line, column=column, value=value,
            message=f'{self.root / table}, line {line}: {text}',
            patient_ids=list(patient_ids), roi_ids=list(roi_ids),
            action=action)
        if self.strict:
            raise CohortError(problem.message)
        self.problems.append(problem)
        return problem


def load_cohort(root: PathLike,
                classes: Optional[Sequence[str]] = None,
                strict: bool = True) -> Cohort:
    """Read ``patients.csv`` and ``rois.csv`` from a cohort folder.

    Args:
        root: The cohort folder.
        classes: Class names in index order. ``None`` takes
            ``('STB', 'SM')`` when every label is one of them, and the
            sorted label names otherwise.
        strict: Raise at the first row-level problem. With ``False`` the
            row, and the patient or ROIs it affects, is skipped and
            described in ``Cohort.problems``, so the returned cohort may
            have fewer ROIs than ``rois.csv``, or none.

    Returns:
        Cohort: the checked tables.

    Raises:
        CohortError: a table or column is missing, or a table cannot be
            decoded. In strict mode also at the first row-level problem: an
            id that is empty, duplicated or unknown, a patient with two
            sites or diagnoses, a ROI without label or annotation, an
            invalid slice number, or a label that is not in ``classes``.

    Examples:
        >>> cohort = load_cohort('tests/data/cohort')  # doctest: +SKIP
        >>> cohort.classes  # doctest: +SKIP
        ('STB', 'SM')
        >>> lenient = load_cohort('my_cohort', strict=False)  # doctest: +SKIP
        >>> [problem.message for problem in lenient.problems]  # doctest: +SKIP
    """
    root = Path(root)
    log = _ProblemLog(root, strict)

    # Structural checks, then the rows of each table.
    patient_rows, _ = _read_table(root / 'patients.csv', PATIENT_COLUMNS,
                                  log)
    roi_rows, n_malformed_rois = _read_table(root / 'rois.csv', ROI_COLUMNS,
                                             log)
    patients, patient_lines, rejected = _parse_patients(patient_rows, log)
    rois = _parse_rois(roi_rows, patients, rejected, root, log)

    # Labels against the class names.
    resolved = resolve_classes([roi.label for _, roi in rois], classes)
    rois = _check_labels(patients, patient_lines, rois, resolved, log)
    return Cohort(root=root, patients=patients,
                  rois=[roi for _, roi in rois], classes=tuple(resolved),
                  problems=log.problems,
                  skipped_roi_rows=len(roi_rows) + n_malformed_rois
                  - len(rois))


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


def _read_table(path: Path, required: Sequence[str],
                log: _ProblemLog) -> Tuple[List[Row], int]:
    """Read a CSV table; a row with surplus fields is a row-level problem.

    Returns the non-empty rows and the number of malformed rows skipped.
    """
    if not path.is_file():
        raise CohortError(
            f'{path}: not found. A cohort folder contains patients.csv and '
            'rois.csv; see the README for their columns.')
    reader = csv.DictReader(io.StringIO(_decode_table(path), newline=''))

    # The header.
    header = [name.strip() for name in (reader.fieldnames or [])]
    repeated = sorted(name for name, count in Counter(header).items()
                      if count > 1 and name)
    if repeated:
        raise CohortError(
            f'{path}: column(s) {repeated} appear more than once in the '
            'header. Rename or delete the repeated columns.')
    missing = [name for name in required if name not in header]
    if missing:
        raise CohortError(
            f'{path}: missing column(s) {missing}; found {header}.'
            + _header_hint(header, missing))

    # The rows.
    rows: List[Row] = []
    n_malformed = 0
    for row in reader:
        if None in row:
            # csv.DictReader stores surplus fields under the key None.
            log.add(path.name, reader.line_num, None, None,
                    f'{len(header)} columns in the header but '
                    f'{len(header) + len(row[None])} fields in this row. '
                    ' Remove the extra fields (a trailing '
                    'comma) or quote values that contain commas.')
            n_malformed += 1
            continue
        cells = {key.strip(): (value or '').strip()
                 for key, value in row.items()}
        if any(cells.values()):
            rows.append((reader.line_num, cells))
    if not rows and not n_malformed:
        raise CohortError(f'{path}: the table has no rows.')
    return rows, n_malformed


def _decode_table(path: Path) -> str:
    data = path.read_bytes()
    for encoding in TABLE_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CohortError(
        f'{path}: the file is neither UTF-8 nor GBK/GB18030 text. Save it '
        'as "CSV UTF-8" from Excel, or as UTF-8 from a text editor.')


def _header_hint(header: List[str], missing: List[str]) -> str:
    """Suggest a fix for common header mistakes."""
    if len(header) == 1 and (';' in header[0] or '\t' in header[0]):
        return (' The file seems to use semicolons or tabs between fields; '
                'save it with commas ("CSV UTF-8" in Excel).')
    by_key = {name.casefold().replace(' ', '_'): name for name in header}
    renames = [f'{by_key[name]!r} -> {name!r}' for name in missing
               if name in by_key]
    if renames:
        return (' Column names are lower case with underscores; rename '
                + ', '.join(renames) + '.')
    return ' Add the column; see the README for the columns of each table.'


def _parse_patients(
    rows: List[Row], log: _ProblemLog
) -> Tuple[Dict[str, Patient], Dict[str, int], Dict[str, TableProblem]]:
    """Return the valid patients, their first line, and rejected ids.

    The third value maps each rejected patient_id to the problem that
    rejected it.
    """
    table = 'patients.csv'

    # Rows grouped by patient_id, in order of first appearance.
    groups: Dict[str, List[Row]] = {}
    for line, row in rows:
        if not row['patient_id']:
            log.add(table, line, 'patient_id', '',
                    'empty patient_id. Fill in the id or delete the row.')
            continue
        groups.setdefault(row['patient_id'], []).append((line, row))

    patients: Dict[str, Patient] = {}
    lines: Dict[str, int] = {}
    rejected: Dict[str, TableProblem] = {}
    for patient_id, entries in groups.items():
        problem = _patient_conflict(patient_id, entries, log)
        if problem is not None:
            rejected[patient_id] = problem
            continue

        # Repeated rows that agree: the first one is kept.
        (first, row), repeats = entries[0], entries[1:]
        for line, _ in repeats:
            log.add(table, line, 'patient_id', patient_id,
                    f'patient_id {patient_id!r} appears twice (lines {first} '
                    f'and {line}). Keep one row per patient.',
                    action='ignored')
        site = next(r['site'] for _, r in entries if r['site'])
        diagnosis = next((r.get('diagnosis') for _, r in entries
                          if r.get('diagnosis')), None)
        extra = {key: value for key, value in row.items()
                 if key not in ('patient_id', 'site', 'diagnosis')}
        patients[patient_id] = Patient(patient_id, site, diagnosis, extra)
        lines[patient_id] = first
    return patients, lines, rejected


def _patient_conflict(patient_id: str, entries: List[Row],
                      log: _ProblemLog) -> Optional[TableProblem]:
    """Log and return the problem that rejects a patient, if any."""
    table = 'patients.csv'
    first = entries[0][0]
    sites = [(line, row['site']) for line, row in entries if row['site']]
    if not sites:
        return log.add(
            table, first, 'site', '',
            f'patient {patient_id!r} has no site. Fill in the hospital or '
            'scanner.', patient_ids=[patient_id])

    other_site = next((entry for entry in sites if entry[1] != sites[0][1]),
                      None)
    if other_site is not None:
        return log.add(
            table, other_site[0], 'site', other_site[1],
            f'patient_id {patient_id!r} appears twice with different sites: '
            f'{sites[0][1]!r} on line {sites[0][0]} and {other_site[1]!r} on '
            f'line {other_site[0]}. A patient belongs to one site, which '
            'keeps the development and external test sets apart. Keep the '
            'correct row and delete the other.', patient_ids=[patient_id])

    diagnoses = [(line, row.get('diagnosis')) for line, row in entries
                 if row.get('diagnosis')]
    other_diagnosis = next((entry for entry in diagnoses
                            if entry[1] != diagnoses[0][1]), None)
    if other_diagnosis is not None:
        return log.add(
            table, other_diagnosis[0], 'diagnosis', other_diagnosis[1],
            f'patient_id {patient_id!r} appears twice with different '
            f'diagnoses: {diagnoses[0][1]!r} on line {diagnoses[0][0]} and '
            f'{other_diagnosis[1]!r} on line {other_diagnosis[0]}. A patient '
            'has one diagnosis. Keep the correct row and delete the other.',
            patient_ids=[patient_id])
    return None


def _parse_rois(rows: List[Row], patients: Dict[str, Patient],
                rejected: Dict[str, TableProblem], root: Path,
                log: _ProblemLog) -> List[Tuple[int, Roi]]:
    """Return the valid ROIs with their line numbers in ``rois.csv``."""
    table = 'rois.csv'
    lines_of: Dict[str, List[int]] = {}
    for line, row in rows:
        lines_of.setdefault(row['roi_id'], []).append(line)
    first_row = {}
    for line, row in rows:
        first_row.setdefault(row['roi_id'], row)

    rois: List[Tuple[int, Roi]] = []
    for line, row in rows:
        roi_id, patient_id = row['roi_id'], row['patient_id']

        # The roi_id: present and unique.
        if not roi_id:
            log.add(table, line, 'roi_id', '',
                    'empty roi_id. Give each lesion image an id.')
            continue
        lines = lines_of[roi_id]
        if len(lines) > 1:
            if any(other != first_row[roi_id] for _, other in rows
                   if other['roi_id'] == roi_id):
                if line == lines[1]:
                    log.add(table, line, 'roi_id', roi_id,
                            f'roi_id {roi_id!r} appears {len(lines)} times '
                            f'(lines {_join(lines)}) with different '
                            'content. Give each lesion image its own id.',
                            roi_ids=[roi_id])
                continue
            if line != lines[0]:
                log.add(table, line, 'roi_id', roi_id,
                        f'roi_id {roi_id!r} appears twice (lines {lines[0]} '
                        f'and {line}) in identical rows. Delete the '
                        'repeated row.', action='ignored')
                continue

        # The patient: known and not rejected.
        if patient_id in rejected:
            rejected[patient_id].roi_ids.append(roi_id)
            continue
        if patient_id not in patients:
            log.add(table, line, 'patient_id', patient_id,
                    f'patient_id {patient_id!r} of ROI {roi_id!r} is not in '
                    'patients.csv. Add the patient or fix the id (ids are '
                    'compared as text: 007 and 7 differ).', roi_ids=[roi_id])
            continue

        roi = _parse_roi(row, patients[patient_id], root, line, log)
        if roi is not None:
            rois.append((line, roi))
    return rois


def _parse_roi(row: Dict[str, str], patient: Patient, root: Path, line: int,
               log: _ProblemLog) -> Optional[Roi]:
    """Build one ROI, or log its problem and return ``None``."""
    table = 'rois.csv'
    roi_id = row['roi_id']
    label = row.get('label') or patient.diagnosis
    if not label:
        log.add(table, line, 'label', '',
                f'ROI {roi_id!r} has no label, and patient '
                f'{patient.patient_id!r} has no diagnosis. Fill one of '
                'them.', roi_ids=[roi_id])
        return None
    if not row['annotation']:
        log.add(table, line, 'annotation', '',
                f'ROI {roi_id!r} has no annotation. Give the path of its '
                'Labelme file.', roi_ids=[roi_id])
        return None
    numbers = {}
    for column in ('slice_index', 'instance_number'):
        value = row.get(column) or ''
        try:
            numbers[column] = _optional_int(value)
        except ValueError:
            log.add(table, line, column, value,
                    f'{column}={value!r} is not an integer (ROI '
                    f'{roi_id!r}). Give the whole-number index of the '
                    'outlined slice, or leave it empty for a 2-D file.',
                    roi_ids=[roi_id])
            return None
    return Roi(roi_id=roi_id,
               patient_id=patient.patient_id,
               label=label,
               annotation=root / row['annotation'].replace('\\', '/'),
               image=_optional_path(root, row.get('image')),
               dicom=_optional_path(root, row.get('dicom')),
               slice_index=numbers['slice_index'],
               instance_number=numbers['instance_number'],
               extra={key: value for key, value in row.items()
                      if key not in ROI_KNOWN_COLUMNS})


def _check_labels(patients: Dict[str, Patient], patient_lines: Dict[str, int],
                  rois: List[Tuple[int, Roi]], classes: Tuple[str, ...],
                  log: _ProblemLog) -> List[Tuple[int, Roi]]:
    """Skip patients and ROIs whose label is not among ``classes``."""
    with_rois = {roi.patient_id for _, roi in rois}
    for patient_id in list(patients):
        diagnosis = patients[patient_id].diagnosis
        if patient_id not in with_rois or diagnosis in (None, *classes):
            continue
        skipped = [roi.roi_id for _, roi in rois
                   if roi.patient_id == patient_id]
        log.add('patients.csv', patient_lines[patient_id], 'diagnosis',
                diagnosis,
                f'diagnosis {diagnosis!r} of patient {patient_id!r} is not '
                f'among the classes {list(classes)}. Fix the diagnosis or '
                'pass the class names (--classes).',
                patient_ids=[patient_id], roi_ids=skipped)
        del patients[patient_id]
    rois = [(line, roi) for line, roi in rois if roi.patient_id in patients]

    valid_rois = []
    for line, roi in rois:
        if roi.label in classes:
            valid_rois.append((line, roi))
            continue
        log.add('rois.csv', line, 'label', roi.label,
                f'label {roi.label!r} of ROI {roi.roi_id!r} is not among the '
                f'classes {list(classes)}. Fix the label or pass the class '
                'names (--classes).', roi_ids=[roi.roi_id])
    return valid_rois


def _join(numbers: Sequence[int]) -> str:
    return ', '.join(str(number) for number in numbers)


def _optional_path(root: Path, value: Optional[str]) -> Optional[Path]:
    if not value:
        return None
    return root / value.replace('\\', '/')


def _optional_int(value: str) -> Optional[int]:
    """Parse a whole number; raise ``ValueError`` for anything else."""
    if value == '':
        return None
    # pandas writes an integer column with empty cells as '2.0', so whole
    # floats are accepted.
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)
