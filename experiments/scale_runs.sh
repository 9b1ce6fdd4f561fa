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
# Environment: PY (default .venv/bin/python), CODE (a frozen copy of the repository whose
# run_BDN.py is run; default this checkout's HEAD, exported once), ITERATIONS (3000).
set -u
main() {
    cd "$(dirname "$0")/.."
    PY=${PY:-$PWD/.venv/bin/python}
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
    mkdir -p devdata/logs
    if [ -z "${CODE:-}" ]; then
        CODE=devdata/code/$(git rev-parse --short HEAD)
        if [ ! -f "$CODE/run_BDN.py" ]; then mkdir -p "$CODE" && git archive HEAD | tar -x -C "$CODE"; fi
    fi
    for size in 256 512; do
        [ -d "devdata/crops$size/CC" ] || "$PY" experiments/prepare_data.py --data ../shared/data \
            --out "devdata/crops$size" --size "$size" > "devdata/logs/prepare_data_$size.log"
    done
    # subset SIZE SET: the folder of the pairs of SET (PolyU30: every 3rd PolyU pair; CC: all)
    subset() {
        local crops=devdata/crops$1 folder=devdata/crops$1/$2 dataset every
        dataset=$([ "$2" = PolyU30 ] && echo PolyU || echo CC)
        every=$([ "$2" = PolyU30 ] && echo 3 || echo 1)
        mkdir -p "$folder/real" "$folder/mean"
        for real in $(ls "$crops/$dataset/real" | awk -v every="$every" 'NR % every == 1 || every == 1' | head -n 30); do
            cp -n "$crops/$dataset/real/$real" "$folder/real/"
            cp -n "$crops/$dataset/mean/${real%.*}".* "$folder/mean/"
        done
        echo "$folder"
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
