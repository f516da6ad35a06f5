"""Classify the ROIs of a new patient's slice with trained models.

The same program as the ``stbsm-infer`` console command; see
``stbsm_mm/inference/cli.py`` or ``python tools/infer.py --help``.

Example::

    python tools/infer.py dicom/100_t2 --roi ivd3.json \
        --model work_dirs/resnet34_stbsm --out-dir results/case-017
"""
import sys

from stbsm_mm.inference.cli import main

if __name__ == '__main__':
    sys.exit(main())
