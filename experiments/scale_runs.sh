#!/usr/bin/env bash
# Issue 26: the reproduction at the paper's scale. DIP runs of centre crops at 256x256, then the
# whole 512x512 CC images; 3000 iterations, a snapshot every 20, in bf16 (PRECISION; the shipped
# CPU fast path, whose quality against fp32 is docs/REPRODUCTION.md section 8). Resumable: rerun
# after an interruption (a stop signal saves the fit; a kill loses at most --checkpoint_every
# iterations per image).
#
#   nohup experiments/scale_runs.sh > devdata/logs/scale_runs.log 2>&1 &
#   python -m experiments.precision_study collect --runs devdata/scale --results results/scale
#
# Two streams, one thread each (one per core), over the same list in the same order; the two
# processes on one folder share its images through run_BDN.py's per-image locks. The list: the 5
# CC pairs at seed 0 (the report set), 30 PolyU pairs at seed 0 (every 3rd by name: training and
# tuning), the CC pairs at seeds 1 and 2, then the CC images at 512x512, seed 0.
# Runs go to devdata/scale/<size>px/<precision>/<set>_s<seed>; after each folder `collect` copies
# the per-iteration rows (no pixels) of its finished images under results/scale, to commit.
# Environment: PY, CODE (experiments/runs_setup.sh), ITERATIONS (3000), PRECISION (bf16).
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
        local folder out=devdata/scale/$1px/${PRECISION:-bf16}/$2_s$3
        folder=$(subset "$1" "$2")
        echo "$(date -Is) $1px $2 seed $3 -> $out"
        nice -n 5 "$PY" "$CODE/run_BDN.py" --dataset_real_path "$folder/real" \
            --dataset_mean_path "$folder/mean" --output_path "$out" --num_iter "${ITERATIONS:-3000}" \
            --save_iter 20 --seed "$3" --init_from scratch --gpu_id cpu --precision "${PRECISION:-bf16}" --quiet
        "$PY" -m experiments.precision_study collect --runs devdata/scale --results results/scale
    }
    # stream: the whole list, in order
    stream() {
        run 256 CC 0; run 256 PolyU30 0; run 256 CC 1; run 256 CC 2; run 512 CC 0
    }
    stream & sleep 5; stream
    wait
}
main "$@"; exit
