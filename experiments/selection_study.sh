#!/usr/bin/env bash
# The selection and baseline study (issues 9 and 15), one command, resumable: rerun it after an
# interruption and finished work is skipped (run_BDN.py skips finished images, the CBM3D table
# and the feature cache fill in what is missing).
#
#   nohup experiments/selection_study.sh > devdata/logs/selection_study.log 2>&1 &
#
# Two streams, one per core: A fits the PolyU crops every 10th from offsets 0-4, then the CC
# crops from scratch (seeds 0-2), then noisier copies of two PolyU subsets; B the PolyU offsets
# 9-5, then CBM3D at full scale. Then BIQAN at 10/30/100 images and its variants, the feature
# cache, the selector study, the ensemble study, and a ranker trained into checkpoint/ranker.
# Environment: PY (default .venv/bin/python), ITER (1200), SEEDS ("0 1 2"), CODE (a frozen copy
# of the repository whose run_BDN.py is run; default this checkout's HEAD, exported once).
set -u
main() {
    cd "$(dirname "$0")/.."
    PY=${PY:-$PWD/.venv/bin/python}
    ITER=${ITER:-1200}
    SEEDS=${SEEDS:-"0 1 2"}
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
    mkdir -p devdata/logs
    if [ -z "${CODE:-}" ]; then
        CODE=devdata/code/$(git rev-parse --short HEAD)
        if [ ! -f "$CODE/run_BDN.py" ]; then mkdir -p "$CODE" && git archive HEAD | tar -x -C "$CODE"; fi
    fi
    step() { echo "$(date -Is) step: $*"; "$@" || echo "$(date -Is) step failed ($?): $*"; }
    polyu() {
        for offset in "$@"; do
            step $PY experiments/run_polyu.py --crops devdata/crops --every 10 --offset "$offset" \
                --out "devdata/runs/PolyU_s0_o$offset" --seed 0 --num_iter "$ITER" --code "$CODE"
        done
    }
    step $PY experiments/prepare_data.py --data ../shared/data --out devdata/crops --size 64 > devdata/logs/prepare_data.log
    stream_a() {
        polyu 0 1 2 3 4
        step $PY experiments/transfer.py run --crops devdata/crops --runs devdata/runs --seeds $SEEDS \
            --num_iter "$ITER" --code "$CODE" --polyu_run devdata/runs/PolyU_s0_o0 --inits scratch
        step $PY experiments/noisier_polyu.py --offsets 0 1 --num_iter "$ITER" --code "$CODE"
    }
    stream_b() {
        polyu 9 8 7 6 5
        step $PY experiments/cbm3d_full.py --data ../shared/data --tables devdata/tables
    }
    stream_a > devdata/logs/selection_stream_a.log 2>&1 &
    stream_b > devdata/logs/selection_stream_b.log 2>&1
    wait
    step $PY experiments/biqan_volume.py
    step $PY experiments/selector_features.py devdata/runs/PolyU_s0_[on]* devdata/runs/CC_scratch_s*
    step $PY experiments/selector_study.py
    step $PY experiments/ensemble_study.py
    step experiments/ship_ranker.sh
    echo "$(date -Is) selection study done"
}
main "$@"; exit
