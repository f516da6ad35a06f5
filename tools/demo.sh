#!/usr/bin/env bash
# The main job, end to end on a fresh machine:
#   1. install stbsm-mm into .venv (tools/install.sh);
#   2. generate a synthetic STB/SM cohort (real patient data cannot ship
#      with the code) in data/synthetic_cohort;
#   3. prepare it (N4, normalisation, lesion crops, patient splits), with
#      the site "Site C" as the external test set;
#   4. train ResNet34 and MViTv2 on a short schedule;
#   5. test both on the external site and print where the metrics are.
#   bash tools/demo.sh
# Variables: EPOCHS (default 4), REPEAT (training-set repetitions per epoch,
# default 4; the study's schedule is 200 epochs x 20), BATCH (default 16),
# WORK_DIR (default work_dirs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-4}
REPEAT=${REPEAT:-4}
BATCH=${BATCH:-16}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
COHORT=data/synthetic_cohort
PREPARED=data/synthetic_prepared

bash tools/install.sh
PY=${VENV:-.venv}/bin/python

if [ ! -f "$COHORT/rois.csv" ]; then
    "$PY" tools/make_synthetic_cohort.py "$COHORT" --seed 0 --patients-per-site 16
fi
"$PY" tools/prepare_data.py "$COHORT" "$PREPARED" --external-sites "Site C"

for model in resnet34 mvitv2; do
    echo "== Training $model for $EPOCHS epochs"
    "$PY" tools/train.py "configs/stbsm/${model}_stbsm.py" \
        --work-dir "$WORK_DIR/$model" \
        --cfg-options data_root="$PREPARED" train_cfg.max_epochs="$EPOCHS" \
        train_dataloader.dataset.times="$REPEAT" \
        train_dataloader.batch_size="$BATCH" \
        default_hooks.checkpoint.interval="$EPOCHS"
    echo "== Testing $model on the external site"
    "$PY" tools/test.py "configs/stbsm/${model}_stbsm_external.py" \
        "$WORK_DIR/$model/epoch_${EPOCHS}.pth" \
        --cfg-options data_root="$PREPARED"
done

"$PY" - "$WORK_DIR" <<'PYTHON'
import json
import sys
from pathlib import Path

work_dir = Path(sys.argv[1])
print('\nExternal-test figures (image level; positive class in brackets):')
print(f'{"model":10} {"ACC":>6} {"SENS":>6} {"SPEC":>6} {"F1":>6} {"AUC":>6}')
for model in ('resnet34', 'mvitv2'):
    path = work_dir / model / 'external' / 'metrics.json'
    figures = json.loads(path.read_text())
    cells = [figures.get(key) for key in
             ('accuracy', 'sensitivity', 'specificity', 'f1', 'auc')]
    text = ' '.join('   n/a' if v is None else f'{v:6.3f}' for v in cells)
    print(f'{model:10} {text}  [{figures["positive_class"]}]  {path}')
print('Per-ROI predictions: predictions.csv beside each metrics.json.')
PYTHON
