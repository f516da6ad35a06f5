"""Compare N4 settings on a cohort's slices: time and effect on the result.

N4 is iterative and has no single correct result, because more iterations
and a finer fit grid keep changing the corrected slice a little. This tool runs
several settings on the same slices and reports, for each, the seconds per
slice and how far its normalised slice (0..255, as prepared) lies from a
long reference fit and from the first setting, as the mean absolute
difference in grey levels inside the foreground mask.

Examples:
    python tools/compare_n4.py ../shared/data/spider-t2-demo \
        --settings 4:1e-6 4:1e-3 8:1e-3 --out n4_settings.json
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple


def parse_setting(text: str) -> Tuple[int, float]:
    """Parse ``SHRINK:THRESHOLD``, e.g. ``8:1e-3``."""
    try:
        shrink, threshold = text.split(':')
        return int(shrink), float(threshold)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'invalid setting {text!r}; use SHRINK:THRESHOLD, e.g. 8:1e-3'
        ) from None


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('cohort_dir', help='cohort folder with rois.csv')
    parser.add_argument(
        '--settings', nargs='+', type=parse_setting,
        default=[(4, 1e-6), (4, 1e-3), (8, 1e-3), (8, 1e-6)],
        help='N4 settings as SHRINK:THRESHOLD; the first is the baseline '
        '(default: 4:1e-6 4:1e-3 8:1e-3 8:1e-6)')
    parser.add_argument(
        '--reference', type=parse_setting, default=(2, 1e-7),
        help='the long reference fit, SHRINK:THRESHOLD, with 100 '
        'iterations at each of 4 levels (default: 2:1e-7)')
    parser.add_argument(
        '--iterations', type=int, nargs='+', default=[50, 50, 30, 20],
        help='maximum iterations per level of the compared settings '
        '(default: 50 50 30 20)')
    parser.add_argument('--max-slices', type=int, default=20,
                        help='slices to use, in rois.csv order (default: 20)')
    parser.add_argument('--out', help='JSON file for the figures')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import SimpleITK as sitk

    from stbsm_mm.cohort import load_cohort
    from stbsm_mm.io import read_slice
    from stbsm_mm.preprocessing import (correct_bias_field, foreground_mask,
                                        normalize_intensity)
    from stbsm_mm.utils import atomic_write_json

    # One thread, as in tools/prepare_data.py, so times are per core.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)

    # The distinct source slices of the cohort.
    cohort = load_cohort(args.cohort_dir)
    sources = []
    for roi in cohort.rois:
        key = (roi.image or roi.dicom, roi.slice_index, roi.instance_number)
        if key[0] is not None and key not in sources:
            sources.append(key)
    sources = sources[:args.max_slices]
    if not sources:
        raise SystemExit(f'error: no image or dicom column in '
                         f'{args.cohort_dir}/rois.csv names a slice.')

    def corrected(image, mask, shrink, threshold, iterations):
        start = time.perf_counter()
        result, _ = correct_bias_field(image, mask, shrink_factor=shrink,
                                       iterations=iterations,
                                       convergence_threshold=threshold)
        seconds = time.perf_counter() - start
        array = sitk.GetArrayFromImage(normalize_intensity(result, mask))
        return array.astype(np.float64), seconds

    # Run every setting on every slice.
    rows = {setting: [] for setting in args.settings}
    for path, slice_index, instance_number in sources:
        image = sitk.Cast(read_slice(path, slice_index, instance_number),
                          sitk.sitkFloat32)
        mask = foreground_mask(image)
        inside = sitk.GetArrayViewFromImage(mask) > 0
        reference, _ = corrected(image, mask, *args.reference, [100] * 4)
        baseline, _ = corrected(image, mask, *args.settings[0],
                                args.iterations)
        for setting in args.settings:
            array, seconds = corrected(image, mask, *setting,
                                       args.iterations)
            rows[setting].append(
                (seconds, np.abs(array - reference)[inside].mean(),
                 np.abs(array - baseline)[inside].mean()))

    # Report the means over slices.
    results = []
    print(f'{len(sources)} slices; grey levels are mean absolute '
          'differences inside the foreground (0..255).')
    print(f'{"shrink":>6} {"threshold":>9} {"s/slice":>8} '
          f'{"vs reference":>12} {"vs baseline":>11}')
    for (shrink, threshold), values in rows.items():
        seconds, to_reference, to_baseline = np.mean(values, axis=0)
        results.append(dict(shrink_factor=shrink,
                            convergence_threshold=threshold,
                            seconds_per_slice=float(seconds),
                            grey_levels_from_reference=float(to_reference),
                            grey_levels_from_baseline=float(to_baseline)))
        print(f'{shrink:>6} {threshold:>9.0e} {seconds:>8.3f} '
              f'{to_reference:>12.2f} {to_baseline:>11.2f}')
    if args.out:
        atomic_write_json(args.out, dict(
            slices=len(sources), iterations=args.iterations,
            reference=dict(shrink_factor=args.reference[0],
                           convergence_threshold=args.reference[1],
                           iterations=[100] * 4),
            settings=results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
