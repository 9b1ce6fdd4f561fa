#!/usr/bin/env bash
# Train a snapshot ranker into the default location of the scripts (checkpoint/ranker/ranker.json,
# git-ignored: the project comes without one) on every finished PolyU run of
# experiments/run_polyu.py (devdata/runs/PolyU_s0_o<k>, the 64x64 crops of prepare_data.py),
# through the project's own steps 2 and 3. The run folders are gathered by symbolic links into one.
#
#   experiments/ship_ranker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ALL=devdata/runs/PolyU_s0_all
mkdir -p "$ALL" devdata/labels
for folder in devdata/runs/PolyU_s0_o*/*/; do
    if [ -f "$folder/summary.json" ]; then ln -sfn "$(realpath "$folder")" "$ALL/$(basename "$folder")"; fi
done
$PY generator_dataset.py --dataset_path "$ALL" --output_path devdata/labels/PolyU_s0_all.txt
$PY train_BIQAN.py --classification_model ranker --dataset_image_path "$ALL" \
    --dataset_file_path devdata/labels/PolyU_s0_all.txt --noisy_path devdata/crops/PolyU/real \
    --output_checkpoint checkpoint/ranker --output_path devdata/ranker_train --validation_fraction 0.1
