#!/usr/bin/env bash
# Issue 21: paired DIP runs, fp32 against bf16 (autocast, channels-last on the CPU), on the same
# centre crops, seeds and flags; experiments/precision_study.py turns them into the table of
# docs/REPRODUCTION.md. Resumable: rerun after an interruption and finished images are skipped.
#
#   nohup experiments/precision_runs.sh > devdata/logs/precision_runs.log 2>&1 &
#
# Two streams, one thread each (one per core): fp32 in one, bf16 in the other, over the same sets
# in the same order, so that the pairs complete together: at 64 px the 5 CC crops at seed 0, 20
# PolyU crops (every 5th pair by name, seed 0), the CC crops at seeds 1 and 2; then at 128 px the
# CC crops at seed 0. 1200 iterations, a snapshot every 20.
# Runs go to devdata/precision/<size>px/<precision>/<set>_s<seed> (bf16-autocast: the plain
# autocast runs of an earlier commit, before BatchNorm and the head were kept in fp32).
# Environment: PY, CODE (experiments/runs_setup.sh), ITERATIONS (1200).
set -u
main() {
    . "$(dirname "$0")/runs_setup.sh"
    runs_setup
    native_precision bf16 || return 2  # its bf16 stream
    prepare_crops 64 128
    # subset SIZE SET: the folder of the pairs of SET (PolyU20: every 5th PolyU pair; CC: all)
    subset() {
        if [ "$2" = PolyU20 ]; then crop_subset "$1" "$2" PolyU 5 20; else crop_subset "$1" "$2" CC 1 100; fi
    }
    # run SIZE SET SEED PRECISION
    run() {
        local folder out=devdata/precision/$1px/$4/$2_s$3
        folder=$(subset "$1" "$2")
        echo "$(date -Is) $1px $2 seed $3 $4 -> $out"
        nice -n 5 "$PY" "$CODE/run_BDN.py" --dataset_real_path "$folder/real" \
            --dataset_mean_path "$folder/mean" --output_path "$out" --num_iter "${ITERATIONS:-1200}" \
            --save_iter 20 --seed "$3" --init_from scratch --gpu_id cpu --precision "$4" --quiet
    }
    # stream PRECISION: every set, in order
    stream() {
        run 64 CC 0 "$1"; run 64 PolyU20 0 "$1"; run 64 CC 1 "$1"; run 64 CC 2 "$1"
        run 128 CC 0 "$1"
    }
    stream fp32 & stream bf16
    wait
}
main "$@"; exit
