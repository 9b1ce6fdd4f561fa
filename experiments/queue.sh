#!/usr/bin/env bash
# All reduced-scale CPU experiments, one after another (one process, one thread at a time), resumable:
# rerun the same command after an interruption and finished work is skipped.
#
#   nohup nice -n 10 experiments/queue.sh > devdata/logs/queue.log 2>&1 &
#
# Environment: DATA (default ../shared/data), SIZE (crop side, 64), ITER (1200: PolyU and CC-from-scratch
# runs), TRANSFER_ITER (iterations of the CC runs from the other inits, default ITER), SEEDS ("0 1 2"),
# CODE (frozen copy of the repository whose run_BDN.py is run; default: this checkout's HEAD,
# exported once into devdata/code/<sha> so that edits to the checkout cannot change a running queue),
# THREADS (torch/OpenMP threads per process, 1), WAIT=1 (wait for a running queue instead of exiting),
# WAIT_PIDS ("PID ..." of other experiment processes to let finish first), POLYU_EVERY (PolyU subset:
# every N-th pair by name, 4 = 25 images), JOBS (1, or 2: the DIP fits run as two parallel streams,
# A = CC from scratch and chained, B = PolyU runs then CC from the PolyU inits; for a 2-core machine),
# POLYU_INITS (the PolyU-pre-fitted inits of stream B, default "polyu1 polyu_chain8_short polyu_chain4").
set -u
main() {
    cd "$(dirname "$0")/.."
    PY=${PY:-$PWD/.venv/bin/python}
    DATA=${DATA:-../shared/data}
    SIZE=${SIZE:-64}
    ITER=${ITER:-1200}
    TRANSFER_ITER=${TRANSFER_ITER:-$ITER}
    SEEDS=${SEEDS:-"0 1 2"}
    POLYU_EVERY=${POLYU_EVERY:-4}
    JOBS=${JOBS:-1}
    POLYU_INITS=${POLYU_INITS:-"polyu1 polyu_chain8_short polyu_chain4"}
    export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
    mkdir -p devdata/logs
    exec 9> devdata/logs/queue.lock
    if [ "${WAIT:-0}" = 1 ]; then
        echo "$(date -Is) waiting for the running queue to finish"; flock 9
    elif ! flock -n 9; then echo "another queue is running (devdata/logs/queue.lock)"; return 1; fi
    for pid in ${WAIT_PIDS:-}; do
        echo "$(date -Is) waiting for process $pid to end"
        while kill -0 "$pid" 2>/dev/null; do sleep 60; done
    done
    if [ -z "${CODE:-}" ]; then
        CODE=devdata/code/$(git rev-parse --short HEAD)
        if [ ! -f "$CODE/run_BDN.py" ]; then mkdir -p "$CODE" && git archive HEAD | tar -x -C "$CODE"; fi
    fi
    echo "$(date -Is) queue start: code $CODE, crops ${SIZE}px, $ITER iterations, seeds $SEEDS, $OMP_NUM_THREADS thread(s)"

    step() { echo "$(date -Is) step: $*"; "$@" || echo "$(date -Is) step failed ($?): $*"; }

    step $PY experiments/prepare_data.py --data "$DATA" --out devdata/crops --size "$SIZE" > devdata/logs/prepare_data.log
    transfer() {  # iterations, then inits
        local iterations=$1; shift
        step $PY experiments/transfer.py run --crops devdata/crops --runs devdata/runs --seeds $SEEDS \
            --num_iter "$iterations" --code "$CODE" --polyu_run "devdata/runs/PolyU_s0" --inits "$@"
    }
    # stream A, Q1/Q2/Q4: CC from scratch (every seed), then chained
    stream_a() { transfer "$ITER" scratch; transfer "$TRANSFER_ITER" previous; }
    # stream B: Q3 training data and early-stopping tuning data (PolyU crops, seed 0), then Q2's PolyU inits
    stream_b() {
        step $PY experiments/run_polyu.py --crops devdata/crops --out devdata/runs/PolyU_s0 --every "$POLYU_EVERY" \
            --seed 0 --num_iter "$ITER" --code "$CODE"
        transfer "$TRANSFER_ITER" $POLYU_INITS
    }
    if [ "$JOBS" = 2 ]; then
        stream_a > devdata/logs/stream_a.log 2>&1 &
        stream_b > devdata/logs/stream_b.log 2>&1
        wait
    else
        stream_a; stream_b
    fi
    # Q1/Q3 model-free selectors on the CC scratch runs; WMV tuned on the PolyU runs
    step $PY experiments/select_snapshots.py noref --seeds $SEEDS --code "$CODE" --quiet
    step $PY experiments/select_snapshots.py tune_wmv --seeds $SEEDS --code "$CODE" --quiet
    step $PY experiments/select_snapshots.py tune_fixed --seeds $SEEDS --code "$CODE" --quiet
    # Q3: BIQAN variants trained on the PolyU runs (ImageNet ones only if convert_mobilenet_v2.py has run)
    step $PY experiments/biqan_study.py --seeds $SEEDS
    step $PY experiments/select_snapshots.py table --seeds $SEEDS
    step $PY experiments/transfer.py analyse --runs devdata/runs --tables devdata/tables --seeds $SEEDS
    step $PY experiments/report.py
    step $PY experiments/online_stopping.py --biqan resize_imagenet crop_imagenet resize_none crop_none
    echo "$(date -Is) queue done"
}
# the whole script is parsed before it runs, so editing this file cannot disturb a running queue
main "$@"; exit
