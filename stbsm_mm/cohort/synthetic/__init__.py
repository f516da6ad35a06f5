"""Synthetic STB/SM cohort in the on-disk format of a clinical cohort.

Real patient images cannot ship with the repository, so this package draws a
phantom cohort that the rest of the pipeline, the demo command and the unit
tests can read like a real one. The layout is the one a clinical cohort uses:

* ``patients.csv``: ``patient_id,site,diagnosis,age,sex``;
* ``rois.csv``: ``roi_id,patient_id,image,dicom,annotation,slice_index,label``,
  one row per lesion ROI, with ``slice_index`` and ``label`` empty because
  every image is a single 2-D slice and the patient's diagnosis applies;
* ``images/<slice>.nii.gz``: the slice as 2-D uint16 NIfTI with its in-plane
  spacing and origin;
* ``images_png/<slice>.png``: the same slice scaled to 8 bits;
* ``dicom/<slice>/IM0001.dcm``: the same pixels as a one-slice MR series with
  placeholder identifiers (:data:`PLACEHOLDER_IDENTIFIERS`);
* ``annotations/<roi_id>.json``: one Labelme 5 file per ROI;
* ``annotations/anatomy/<slice>.json``: the vertebral bodies, discs, pedicles
  and spinal canal the phantom was drawn from, as Labelme polygons;
* ``README.md`` and ``synthetic_manifest.json`` (the options and the list of
  files written, which lets ``overwrite=True`` remove a previous cohort).

Each slice is a sagittal T2-weighted-like phantom of a lumbar or thoracic
spine segment with anterior at column 0 and superior at row 0. The two
classes differ in lesion geometry and share one lesion-signal distribution:

* first class (STB-like): the lesion destroys an intervertebral disc (height
  loss, abnormal signal) and the anterior parts of the two adjacent vertebral
  bodies, sometimes with a paravertebral abscess;
* second class (SM-like): the lesion spares the disc and involves the
  posterior part of one vertebral body and its pedicle, sometimes with an
  epidural component or a pathological collapse.

Modules, one per step:

* ``options``: validates the options;
* ``patients``: draws the scanner profile of each site and the patients;
* ``anatomy``: lays out the spine of a patient on a slice, in mm;
* ``render``: paints the pixels and lesion ROI masks of a slice;
* ``annotations``: outlines lesion ROIs and anatomy as Labelme shapes;
* ``writers``: writes the output folder, the CSV files and each slice's
  NIfTI, PNG, DICOM and Labelme files;
* ``readme``: builds the text of the cohort README;
* ``generator``: :func:`generate_synthetic_cohort`, which runs these steps.

NOTE: the phantom is a geometric stand-in for pipeline tests and demos.
Accuracy of a model trained on it does not carry over to patients.
"""

from .annotations import LABELME_VERSION
from .generator import generate_synthetic_cohort
from .writers import (ANATOMY_DIR, MANIFEST_NAME, PATIENT_COLUMNS,
                      PLACEHOLDER_IDENTIFIERS, ROI_COLUMNS,
                      placeholder_identifiers)

__all__ = [
    'ANATOMY_DIR', 'LABELME_VERSION', 'MANIFEST_NAME', 'PATIENT_COLUMNS',
    'PLACEHOLDER_IDENTIFIERS', 'ROI_COLUMNS', 'generate_synthetic_cohort',
    'placeholder_identifiers'
]
