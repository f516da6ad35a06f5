"""Patient table, ROI table, patient-level splits and folds."""
from .splits import (EXTERNAL, SPLITS, TRAIN, VAL, LeakageError,
                     PatientSplit, check_disjoint, split_patients)
from .table import (Cohort, CohortError, Patient, Roi, load_cohort,
                    resolve_classes)

__all__ = [
    'EXTERNAL', 'SPLITS', 'TRAIN', 'VAL', 'Cohort', 'CohortError',
    'LeakageError', 'Patient', 'PatientSplit', 'Roi', 'check_disjoint',
    'load_cohort', 'resolve_classes', 'split_patients'
]
