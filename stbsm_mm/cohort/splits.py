"""Patient-level splits: train / validation / external test, and CV folds.

A patient is the unit of splitting: all ROIs of a patient fall in the same
split and the same fold. Patients of the external sites form the external
test set and are never used for training or model selection. The other
(development) patients are split into training and validation, stratified by
label, and into cross-validation folds, with scikit-learn's
``StratifiedGroupKFold`` (groups = patients).
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .table import Cohort, CohortError

TRAIN, VAL, EXTERNAL = 'train', 'val', 'external'
SPLITS = (TRAIN, VAL, EXTERNAL)


class LeakageError(RuntimeError):
    """A patient appears in more than one of the disjoint splits."""


@dataclass
class PatientSplit:
    """Assignment of each patient to a split, and to a fold for development."""

    split: Dict[str, str]
    fold: Dict[str, Optional[int]] = field(default_factory=dict)
    seed: int = 0
    val_fraction: float = 0.2
    n_folds: int = 5
    external_sites: List[str] = field(default_factory=list)

    def patients_in(self, split: str) -> Set[str]:
        return {pid for pid, name in self.split.items() if name == split}

    def fold_patients(self, fold: int) -> Set[str]:
        return {pid for pid, number in self.fold.items() if number == fold}


def split_patients(cohort: Cohort,
                   external_sites: Sequence[str] = (),
                   val_fraction: float = 0.2,
                   n_folds: int = 5,
                   seed: int = 0) -> PatientSplit:
    """Assign every patient to train, val or external, and to a CV fold.

    Args:
        cohort: A loaded cohort.
        external_sites: ``site`` values whose patients form the external
            test set.
        val_fraction: Fraction of development patients held out for
            validation. The split is made as one fold of a stratified group
            K-fold with ``K = round(1 / val_fraction)``, so the fraction is
            met as closely as whole patients and the strata allow.
        n_folds: Number of cross-validation folds of the development
            patients (0 disables folds).
        seed: Random seed of both shuffles. NOTE: ``StratifiedGroupKFold``
            only shuffles patients whose ROI label distributions are alike,
            so on a small cohort many seeds give the same split (on the
            13-patient SPIDER demo cohort, seeds 0 to 199 give two).

    Returns:
        PatientSplit: the assignment.

    Raises:
        CohortError: an external site is unknown, or there are too few
            development patients for the requested split or folds.
    """
    sites = {patient.site for patient in cohort.patients.values()}
    unknown = sorted(set(external_sites) - sites)
    if unknown:
        raise CohortError(
            f'external site(s) {unknown} are not in patients.csv; sites '
            f'found: {sorted(sites)}.')
    if not 0 < val_fraction < 1:
        raise CohortError(f'val_fraction={val_fraction}; use a value in '
                          '(0, 1), e.g. 0.2.')

    external = {pid for pid, patient in cohort.patients.items()
                if patient.site in set(external_sites)}
    patients_with_rois = {roi.patient_id for roi in cohort.rois}
    development = sorted(patients_with_rois - external)

    val_folds = max(2, int(round(1 / val_fraction)))
    held_out = _stratified_group_folds(cohort, development, val_folds, seed,
                                       purpose='the validation split')
    split = {pid: EXTERNAL for pid in sorted(external & patients_with_rois)}
    split.update({pid: VAL if held_out[pid] == 0 else TRAIN
                  for pid in development})

    folds: Dict[str, Optional[int]] = {pid: None for pid in split}
    if n_folds:
        folds.update(
            _stratified_group_folds(cohort, development, n_folds, seed,
                                    purpose='cross-validation'))

    result = PatientSplit(split=split, fold=folds, seed=seed,
                          val_fraction=val_fraction, n_folds=n_folds,
                          external_sites=list(external_sites))
    check_disjoint({name: result.patients_in(name) for name in SPLITS})
    return result


def check_disjoint(patients_by_split: Mapping[str, Iterable[str]]) -> None:
    """Raise :class:`LeakageError` if a patient is in two splits.

    Examples:
        >>> check_disjoint({'train': ['1', '2'], 'val': ['3']})
        >>> check_disjoint({'train': ['1', '2'], 'val': ['2']})
        Traceback (most recent call last):
        ...
        stbsm_mm.cohort.splits.LeakageError: patient 2 is in both train and val...
    """
    seen: Dict[str, str] = {}
    for split, patients in patients_by_split.items():
        for patient_id in sorted(set(patients)):
            if patient_id in seen:
                raise LeakageError(
                    f'patient {patient_id} is in both {seen[patient_id]} and '
                    f'{split}; images of one patient must stay in one split. '
                    'Re-create the splits with tools/prepare_data.py instead '
                    'of editing the annotation files by hand.')
            seen[patient_id] = split


def check_class_coverage(labels_by_split: Mapping[str, Iterable[str]],
                         classes: Sequence[str],
                         training_error: bool = True) -> List[str]:
    """Check that every class has samples in every split.

    A training split (``train``, ``fold<k>_train``) without a class is an
    error, because a model cannot learn a class it never sees. An
    evaluation split (``val``, ``external``, ``fold<k>_val``) without a
    class is still usable, but its AUC and the sensitivity or specificity
    that needs the missing class are undefined, so a warning is returned.
    A split with no samples at all (no external sites) is not checked.

    Args:
        labels_by_split: The class label of each sample, by split name.
        classes: All class names.
        training_error: Raise for a training split without a class. With
            ``False`` its message is returned among the warnings, for
            smoke tests on cohorts too small to have both classes in
            training.

    Returns:
        list: one warning per split and missing class.

    Raises:
        CohortError: a training split has no sample of a class and
            ``training_error`` is set.

    Examples:
        >>> warnings = check_class_coverage(
        ...     {'train': ['STB', 'SM'], 'val': ['STB'], 'external': []},
        ...     ['STB', 'SM'])
        >>> warnings[0].split('.')[0]
        "split 'val' has no ROI of class 'SM' (STB 1)"
    """
    warnings = []
    for name, labels in labels_by_split.items():
        counts = Counter(labels)
        if not counts:
            continue
        found = ', '.join(f'{label} {counts[label]}' for label in classes
                          if counts[label])
        for missing in (label for label in classes if not counts[label]):
            if name == TRAIN or name.endswith('_train'):
                message = (
                    f'split {name!r} has no ROI of class {missing!r} '
                    f'({found}); a model cannot learn a class it never '
                    'sees. Add development patients of that class, check '
                    'the labels, or change --external-sites, --val-fraction '
                    'or --folds.')
                if training_error:
                    raise CohortError(message)
                warnings.append(message)
                continue
            warnings.append(
                f'split {name!r} has no ROI of class {missing!r} ({found}). '
                'It is still written, but AUC and the sensitivity or '
                'specificity that needs this class are undefined on it. Add '
                'patients of that class, or change --seed, --val-fraction '
                'or --folds.')
    return warnings


def check_patient_class_coverage(
        patient_labels_by_split: Mapping[str, Iterable[str]],
        roi_labels_by_split: Mapping[str, Iterable[str]],
        classes: Sequence[str]) -> List[str]:
    """Warn about evaluation splits whose patients all share a label.

    A patient's label is its diagnosis, or its most frequent ROI label. An
    evaluation split (``val``, ``external``, ``fold<k>_val``) can hold ROIs
    of a class without any patient of that class, and then its
    patient-level AUC and the sensitivity or specificity that needs the
    class are undefined. Classes with no ROI in the split are left to
    :func:`check_class_coverage`.

    Args:
        patient_labels_by_split: The label of each patient, by split name.
        roi_labels_by_split: The label of each ROI, by split name.
        classes: All class names.

    Returns:
        list: one warning per evaluation split and missing class.

    Examples:
        >>> check_patient_class_coverage(
        ...     {'val': ['SM', 'SM']}, {'val': ['STB', 'SM', 'SM']},
        ...     ['STB', 'SM'])[0].split(';')[0]
        "split 'val' has ROIs of class 'STB' but no patient labelled 'STB'"
    """
    warnings = []
    for name, labels in patient_labels_by_split.items():
        if name == TRAIN or name.endswith('_train'):
            continue
        patients = Counter(labels)
        rois = Counter(roi_labels_by_split.get(name, ()))
        for label in classes:
            if rois[label] and not patients[label]:
                found = ', '.join(f'{other} {patients[other]}'
                                  for other in classes if patients[other])
                warnings.append(
                    f'split {name!r} has ROIs of class {label!r} but no '
                    f'patient labelled {label!r}; patients: {found}. Its '
                    'patient-level AUC and the sensitivity or specificity '
                    'that needs this class are undefined. Change --seed or '
                    '--val-fraction, or add patients of that class.')
    return warnings


def _stratified_group_folds(cohort: Cohort, patient_ids: List[str],
                            n_splits: int, seed: int,
                            purpose: str) -> Dict[str, int]:
    """Return the fold of each patient from a stratified group K-fold."""
    if len(patient_ids) < n_splits:
        raise CohortError(
            f'{len(patient_ids)} development patients cannot be split into '
            f'{n_splits} folds for {purpose}; add patients or lower the '
            'number of folds (--folds) or raise --val-fraction.')

    wanted = set(patient_ids)
    rois = [roi for roi in cohort.rois if roi.patient_id in wanted]
    labels = np.array([cohort.classes.index(roi.label) for roi in rois])
    groups = np.array([roi.patient_id for roi in rois])

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True,
                                    random_state=seed)
    folds: Dict[str, int] = {}
    for fold, (_, held) in enumerate(
            splitter.split(np.zeros(len(rois)), labels, groups)):
        for patient_id in set(groups[held]):
            folds[str(patient_id)] = fold
    return folds
