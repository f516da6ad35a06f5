"""Record a checkpoint's SHA-256 so that stbsm-mm loads it fully.

Checkpoints written by stbsm-mm training are recorded automatically. Use
this only for a file whose origin you trust (for example, one you trained
with plain MMEngine): full loading unpickles Python objects, which can run
code stored in the file.

Example:
    python tools/trust_checkpoint.py work_dirs/old_run/epoch_200.pth
"""
import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Record the SHA-256 of trusted checkpoint files in '
        'checkpoint_sha256.json beside them.')
    parser.add_argument('checkpoints', nargs='+', help='.pth files to trust')
    args = parser.parse_args(argv)

    from stbsm_mm.engine import record_trusted_checkpoint

    for checkpoint in args.checkpoints:
        if not Path(checkpoint).is_file():
            print(f'error: {checkpoint}: no such file.', file=sys.stderr)
            return 1
        digest = record_trusted_checkpoint(checkpoint)
        print(f'{checkpoint}: recorded SHA-256 {digest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
