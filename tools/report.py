"""Write one report of several tested models: HTML page, Markdown and JSON.

Examples:
    python tools/report.py work_dirs/mvitv2_stbsm work_dirs/resnet34_stbsm \
        --out-dir work_dirs/report --names MViTv2 ResNet34

Writes ``report.html`` (self-contained, images embedded), ``report.md``,
``report.json`` and ``figures/*.png|svg`` to ``--out-dir``.
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Build one report (HTML, Markdown, JSON) of the test '
        'results in one or more work dirs.')
    parser.add_argument(
        'work_dirs', nargs='+',
        help='work dirs with test outputs (<work_dir>/<split>/summary.json '
        'from tools/test.py) or cv_summary.json, one per model')
    parser.add_argument('--out-dir', required=True,
                        help='folder for report.html, report.md, '
                        'report.json and figures/')
    parser.add_argument('--names', nargs='+',
                        help='model names, one per work dir (default: the '
                        'folder names)')
    parser.add_argument('--readers',
                        help='readers.json written by '
                        'tools/compare_readers.py (optional)')
    parser.add_argument('--splits', nargs='+', default=['val', 'external'],
                        help='test output folders to report, in order '
                        '(default: val external)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.logging import MMLogger

    from stbsm_mm.reporting import ReportInputError, build_report

    if not MMLogger.check_instance_created('stbsm_report'):
        MMLogger.get_instance('stbsm_report', log_level='INFO')
    try:
        report = build_report(args.work_dirs, args.out_dir, names=args.names,
                              readers=args.readers, splits=args.splits)
    except ReportInputError as error:
        raise SystemExit(f'error: {error}') from None
    for note in report['notes']:
        print(f'note: {note}', file=sys.stderr)
    print(f'Report written to {args.out_dir}/report.html '
          f'(report.md, report.json, {len(report["plots"])} figures in '
          f'{args.out_dir}/figures).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
