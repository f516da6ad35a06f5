"""Compare human readers with one or more tested models.

Examples:
    python tools/compare_readers.py reads.csv \
        work_dirs/resnet34_stbsm/external work_dirs/mvitv2_stbsm/external \
        --names resnet34 mvitv2 --out-dir work_dirs/readers \
        --data-root data/my_prepared

``reads.csv`` has the columns ``roi_id`` (image level) or ``patient_id``
(patient level), ``reader``, ``call`` (a class name) and optionally
``confidence``. Each PRED_DIR is a folder written by ``tools/test.py``.
Writes ``readers.json`` (each reader's accuracy, sensitivity and
specificity with 95% Wilson intervals and confusion matrix, and McNemar's
test of each model against each reader) and ``readers.md`` to the output
folder.
"""
import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Compare human readers with tested models on the same '
        'ROIs or patients.')
    parser.add_argument('reads', help='CSV of reads: roi_id or patient_id, '
                        'reader, call, optional confidence')
    parser.add_argument('pred_dirs', nargs='+', metavar='PRED_DIR',
                        help='test output folder of a model, with '
                        'predictions.csv and metrics.json')
    parser.add_argument('--out-dir', required=True,
                        help='folder for readers.json and readers.md')
    parser.add_argument('--names', nargs='+', metavar='NAME',
                        help='one name per PRED_DIR (default: the parent '
                        'folder and the folder, e.g. resnet34_stbsm/external)')
    parser.add_argument('--data-root',
                        help='prepared dataset folder; its '
                        'splits/patients.csv gives the patient labels for '
                        'reads of patients')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import MMLogger

    from stbsm_mm.evaluation import compare_readers, write_reader_comparison
    from stbsm_mm.evaluation.summary import read_patient_labels

    logger = MMLogger.get_instance('compare_readers')

    patient_labels = None
    if args.data_root:
        patient_labels = read_patient_labels(args.data_root)
        if patient_labels is None:
            raise SystemExit(
                f'error: {args.data_root}/splits/patients.csv not found. Pass '
                f'the folder written by tools/prepare_data.py as --data-root.')

    try:
        comparison = compare_readers(args.reads, args.pred_dirs,
                                     names=args.names,
                                     patient_labels=patient_labels)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'error: {error}')

    json_path, markdown_path = write_reader_comparison(args.out_dir,
                                                       comparison)
    logger.info(f'Readers against models:\n'
                f'{markdown_path.read_text(encoding="utf-8")}')
    logger.info(f'Wrote {json_path} and {markdown_path}.')


if __name__ == '__main__':
    main()
