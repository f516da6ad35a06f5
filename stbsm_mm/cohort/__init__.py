"""Patient table, ROI table, patient-level splits and folds, synthetic cohort."""
from .splits import (EXTERNAL, SPLITS, TRAIN, VAL, LeakageError,
                     PatientSplit, check_class_coverage, check_disjoint,
                     check_patient_class_coverage, split_patients)
from .synthetic import PLACEHOLDER_IDENTIFIERS, generate_synthetic_cohort
from .table import (Cohort, CohortError, Patient, Roi, TableProblem,
                    load_cohort, resolve_classes)

__all__ = [
    'EXTERNAL', 'PLACEHOLDER_IDENTIFIERS', 'SPLITS', 'TRAIN', 'VAL', 'Cohort',
    'CohortError', 'LeakageError', 'Patient', 'PatientSplit', 'Roi',
    'TableProblem', 'check_class_coverage', 'check_disjoint',
    'check_patient_class_coverage', 'generate_synthetic_cohort', 'load_cohort', 'resolve_classes',
    'split_patients'
]
