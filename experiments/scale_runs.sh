#!/usr/bin/env bash
# Issue 26: the reproduction at the paper's scale. DIP runs of centre crops at 256x256 (the 5 CC
# pairs x seeds 0-2 and 30 PolyU pairs at seed 0, every 3rd by name, for training and tuning),
# then the whole 512x512 CC images at seed 0; 3000 iterations, a snapshot every 20, in the
# precision `--precision auto` picks on this machine (bf16 on AVX512-BF16/AMX CPUs and on GPUs;
# docs/REPRODUCTION.md, the precision table). Resumable: rerun after an interruption (a stop
# signal saves the fit; a kill loses at most --checkpoint_every iterations per image).
#
#   nohup experiments/scale_runs.sh > devdata/logs/scale_runs.log 2>&1 &
#   python -m experiments.precision_study collect --runs devdata/scale --results results/scale
#
# Two streams, one thread each (one per core): CC first (the report set), then PolyU.
# Runs go to devdata/scale/<size>px/auto/<set>_s<seed>; `collect` copies their per-iteration
# rows (no pixels) under results/scale, which is committed.
# Environment: PY, CODE (experiments/runs_setup.sh), ITERATIONS (3000).
set -u
main() {
    . "$(dirname "$0")/runs_setup.sh"
    runs_setup
    prepare_crops 256 512
    # subset SIZE SET: the folder of the pairs of SET (PolyU30: every 3rd PolyU pair; CC: all)
    subset() {
        if [ "$2" = PolyU30 ]; then crop_subset "$1" "$2" PolyU 3 30; else crop_subset "$1" "$2" CC 1 100; fi
    }
    # run SIZE SET SEED
    run() {
        local folder out=devdata/scale/$1px/auto/$2_s$3
        folder=$(subset "$1" "$2")
        echo "$(date -Is) $1px $2 seed $3 -> $out"
        nice -n 5 "$PY" "$CODE/run_BDN.py" --dataset_real_path "$folder/real" \
            --dataset_mean_path "$folder/mean" --output_path "$out" --num_iter "${ITERATIONS:-3000}" \
            --save_iter 20 --seed "$3" --init_from scratch --gpu_id cpu --quiet
    }
    (run 256 CC 0; run 256 CC 2; run 256 PolyU30 0; run 512 CC 0) &
    run 256 CC 1; run 256 PolyU30 0
    wait
}
main "$@"; exit
