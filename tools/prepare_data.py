"""Preprocess a cohort folder into a prepared dataset folder.

Reads patients.csv and rois.csv of COHORT_DIR, corrects each slice's bias
field (N4), normalises its intensities, crops the outlined lesions, splits
the patients and writes crops, annotation files, split files and a manifest
to OUT_DIR. Re-running skips slices whose inputs and parameters are
unchanged.

Example:
    python tools/prepare_data.py ../shared/data/spider-t2-demo \
        data/spider_prepared --external-sites "Philips Ingenia"
"""
import argparse
import json
import sys
from pathlib import Path


def parse_args(argv=None):
    from stbsm_mm.io import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(
        description='Preprocess a cohort (N4, normalisation, lesion crops, '
        'patient-level splits).')
    parser.add_argument('cohort_dir', help='folder with patients.csv and '
                        'rois.csv')
    parser.add_argument('out_dir', help='prepared dataset folder to write')
    split = parser.add_argument_group('splits')
    split.add_argument(
        '--external-sites',
        nargs='*',
        default=[],
        metavar='SITE',
        help='site values (patients.csv) whose patients form the external '
        'test set')
    split.add_argument(
        '--val-fraction',
        type=float,
        default=0.2,
        help='fraction of development patients held out for validation '
        '(default: 0.2)')
    split.add_argument(
        '--folds',
        type=int,
        default=5,
        help='number of cross-validation folds, grouped by patient (default: '
        '5; 0 for none)')
    split.add_argument(
        '--seed', type=int, default=0, help='seed of the splits (default: 0)')
    split.add_argument(
        '--classes',
        nargs='+',
        metavar='NAME',
        help='class names in index order (default: STB SM when the labels '
        'are those, else the sorted label names)')
    prep = parser.add_argument_group('preprocessing')
    prep.add_argument(
        '--source',
        choices=['auto', 'image', 'dicom'],
        default='auto',
        help='which rois.csv column supplies the slice (default: auto = '
        'image, else dicom, else the Labelme file\'s image)')
    prep.add_argument(
        '--no-n4', action='store_true', help='skip N4 bias correction')
    prep.add_argument(
        '--shrink-factor',
        type=int,
        default=8,
        help='down-sampling factor of the N4 fit, per axis (default: 8, a '
        '64 x 64 fit for a 512 x 512 slice)')
    prep.add_argument(
        '--n4-iterations',
        type=int,
        nargs='+',
        default=[50, 50, 30, 20],
        help='maximum N4 iterations per fitting level (default: 50 50 30 20)')
    prep.add_argument(
        '--n4-convergence',
        type=float,
        default=0.001,
        help='N4 convergence threshold per fitting level (default: 0.001, '
        'SimpleITK\'s default; smaller values run more iterations, see '
        'tools/compare_n4.py)')
    prep.add_argument(
        '--max-pixels',
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help='largest number of pixels of a source file, all slices of a '
        'volume together; larger files are skipped with an error (default: '
        f'{DEFAULT_MAX_PIXELS:,}; 0 turns the check off)')
    prep.add_argument(
        '--normalization',
        choices=['percentile', 'zscore'],
        default='percentile',
        help='intensity normalisation (default: percentile 0.5..99.5 of the '
        'foreground to 0..255)')
    prep.add_argument(
        '--percentiles',
        type=float,
        nargs=2,
        default=[0.5, 99.5],
        metavar=('LOW', 'HIGH'),
        help='percentile window, in percent (default: 0.5 99.5)')
    prep.add_argument(
        '--lesion-labels',
        nargs='+',
        metavar='LABEL',
        help='Labelme labels that outline lesions, compared ignoring case '
        '(default: every label). Shapes with other labels are ignored; '
        'polygons, rectangles and circles outline a lesion, lines and '
        'points do not')
    prep.add_argument(
        '--crop-mode',
        choices=['largest', 'union'],
        default='largest',
        help='box the largest lesion shape, or the union of all (default: '
        'largest)')
    prep.add_argument(
        '--margin',
        type=float,
        default=0.0,
        help='extra border per side, as a fraction of the box size '
        '(default: 0)')
    prep.add_argument(
        '--keep-pixel-spacing',
        action='store_true',
        help='do not resample crops to square pixels')
    parser.add_argument(
        '--workers',
        type=int,
        help='worker processes (default: number of CPU cores)')
    parser.add_argument(
        '--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument(
        '--strict',
        action='store_true',
        help='stop at the first invalid row of patients.csv or rois.csv, or '
        'slice that cannot be prepared, and when a training split has no ROI '
        'of a class (default: skip the row or slice, and list it and the '
        'split in OUT_DIR/quality.json and quality.md)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.logging import MMLogger

    from stbsm_mm.cohort import CohortError, LeakageError
    from stbsm_mm.io import LabelmeError, SliceReadError
    from stbsm_mm.preprocessing import PreprocessConfig, prepare_cohort

    # A second get_instance call with arguments only warns, so create once.
    if not MMLogger.check_instance_created('stbsm_mm'):
        MMLogger.get_instance('stbsm_mm', log_level='INFO')
    try:
        config = PreprocessConfig(
            n4=not args.no_n4,
            shrink_factor=args.shrink_factor,
            n4_iterations=tuple(args.n4_iterations),
            n4_convergence=args.n4_convergence,
            normalization=args.normalization,
            low_percentile=args.percentiles[0],
            high_percentile=args.percentiles[1],
            lesion_labels=tuple(args.lesion_labels)
            if args.lesion_labels else None,
            crop_mode=args.crop_mode,
            margin=args.margin,
            square_pixels=not args.keep_pixel_spacing,
            source=args.source,
            max_pixels=args.max_pixels or None)
        manifest = prepare_cohort(
            args.cohort_dir,
            args.out_dir,
            config,
            external_sites=args.external_sites,
            val_fraction=args.val_fraction,
            n_folds=args.folds,
            seed=args.seed,
            classes=args.classes,
            workers=args.workers,
            progress=not args.no_progress,
            strict=args.strict)
    except (CohortError, LeakageError, LabelmeError, SliceReadError,
            ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    counts = manifest['split']['rois']
    print(f'Prepared {len(manifest["rois"])} crops in {args.out_dir}: '
          + ', '.join(f'{name} {count}' for name, count in counts.items()))
    report = Path(args.out_dir) / 'quality.md'
    quality = json.loads((Path(args.out_dir) / 'quality.json').read_text())
    if quality['n_skipped']:
        print(f'Skipped {quality["n_skipped"]} ROI(s) that could not be '
              f'prepared; see {report}.')
    skipped_rows = sum(problem['action'] == 'skipped'
                       for problem in quality['table_problems'])
    if skipped_rows:
        print(f'Skipped {skipped_rows} invalid row(s) of patients.csv and '
              f'rois.csv; see {report}.')
    for warning in quality['split_warnings']:
        print(f'Warning: {warning}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
