"""Write a synthetic STB/SM cohort of phantom MR slices.

The cohort has the on-disk layout of a clinical cohort (``patients.csv``,
``rois.csv``, NIfTI, PNG and one-slice DICOM copies of each slice, Labelme
ROI files), so the demo command and the tests can run without patient data.

Example, from the repository root after ``pip install -e .``::

    python tools/make_synthetic_cohort.py data/synthetic --seed 0
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stbsm_mm.cohort.synthetic import generate_synthetic_cohort


def parse_args(argv: Sequence[str] | None = None
               ) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads
            ``sys.argv``.

    Returns:
        tuple: The parser (for error reporting) and the parsed options.
    """
    parser = argparse.ArgumentParser(
        description=('Write a synthetic cohort of phantom sagittal T2 spine '
                     'slices with STB-like and SM-like lesion ROIs, in the '
                     'same file layout as a clinical cohort.'))
    parser.add_argument(
        'out_dir', type=Path, metavar='OUT_DIR',
        help=('cohort folder to write; created when missing and must be '
              'empty unless --overwrite is given'))
    parser.add_argument(
        '--patients-per-site', type=int, default=8, metavar='N',
        help=('number of patients per site, at least 2; the two diagnoses '
              'are balanced within each site (default: %(default)s)'))
    parser.add_argument(
        '--sites', nargs='+', default=['Site A', 'Site B', 'Site C'],
        metavar='NAME',
        help='site names written to patients.csv (default: %(default)s)')
    parser.add_argument(
        '--rois-per-patient', nargs=2, type=int, default=[1, 3],
        metavar=('MIN', 'MAX'),
        help=('inclusive range of lesion ROIs per patient, 1 to 8; a slice '
              'holds one or two ROIs (default: %(default)s)'))
    parser.add_argument(
        '--size', nargs=2, type=int, default=[256, 256], metavar=('H', 'W'),
        help=('slice height and width in pixels, each 64 to 2048 '
              '(default: %(default)s)'))
    parser.add_argument(
        '--seed', type=int, default=0, metavar='S',
        help=('non-negative seed of every random draw; the same options and '
              'seed give the same files (default: %(default)s)'))
    parser.add_argument(
        '--classes', nargs=2, default=['STB', 'SM'],
        metavar=('STB_LIKE', 'SM_LIKE'),
        help=('diagnosis names written to patients.csv for patients with '
              'STB-like and SM-like lesions (default: %(default)s)'))
    parser.add_argument(
        '--external-site', default=None, metavar='NAME',
        help=('site drawn with the shifted scanner profile (non-square '
              'pixels, stronger bias field and noise), one of --sites '
              '(default: the last of --sites)'))
    parser.add_argument(
        '--overwrite', action='store_true',
        help=('write into a non-empty OUT_DIR: files of a previous synthetic '
              'cohort there (listed in its synthetic_manifest.json) are '
              'removed first, other files are kept'))
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line tool and return its exit status."""
    parser, args = parse_args(argv)
    try:
        generate_synthetic_cohort(
            args.out_dir,
            patients_per_site=args.patients_per_site,
            sites=tuple(args.sites),
            rois_per_patient=tuple(args.rois_per_patient),
            image_size=tuple(args.size),
            seed=args.seed,
            classes=tuple(args.classes),
            overwrite=args.overwrite,
            external_site=args.external_site,
        )
    except (ValueError, TypeError, FileExistsError,
            NotADirectoryError) as error:
        parser.error(str(error))
    return 0


if __name__ == '__main__':
    sys.exit(main())
