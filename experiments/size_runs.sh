#!/usr/bin/env bash
# Issue 9: DIP runs of the same centre crops at 96x96 and 128x128, then experiments/size_study.py
# (the best iteration and the stopping rules against the size). Resumable: rerun it after an
# interruption and finished images are skipped. Needs the 64x64 runs of selection_study.sh.
#
#   nohup experiments/size_runs.sh > devdata/logs/size_runs.log 2>&1 &
#
# Two streams, one per core: the 5 CC crops, then the first POLYU_128 PolyU crops of the
# every-10th subset from offset 0 at 128px; the first POLYU_96 of that subset at 96px.
# Environment: PY, CODE (experiments/runs_setup.sh), POLYU_96 (10), POLYU_128 (4).
set -u
main() {
    . "$(dirname "$0")/runs_setup.sh"
    runs_setup
    # run SIZE DATASET COUNT ITERATIONS: the first COUNT pairs (sorted by name) of the subset
    run() {
        local crops=devdata/crops$1 subset
        subset=$crops/$2_first$3
        mkdir -p "$subset/real" "$subset/mean"
        for real in $(ls "$crops/$2/real" | awk -v every="$([ "$2" = PolyU ] && echo 10 || echo 1)" \
            'NR % every == 1 || every == 1' | head -n "$3"); do
            cp -n "$crops/$2/real/$real" "$subset/real/"
            cp -n "$crops/$2/mean/${real%.*}".* "$subset/mean/"
        done
        local out=devdata/runs$1/$([ "$2" = PolyU ] && echo PolyU_s0_o0 || echo CC_scratch_s0)
        echo "$(date -Is) $1px $2: $3 images -> $out"
        nice -n 5 "$PY" "$CODE/run_BDN.py" --dataset_real_path "$subset/real" \
            --dataset_mean_path "$subset/mean" --output_path "$out" --num_iter "$4" --save_iter 20 \
            --seed 0 --init_from scratch --gpu_id cpu --quiet --show_iter 400
    }
    prepare_crops 96 128
    (run 96 CC 5 1200; run 128 CC 5 2400; run 128 PolyU "${POLYU_128:-4}" 2000) &
    run 96 PolyU "${POLYU_96:-10}" 2000
    wait
    "$PY" experiments/size_study.py 64=devdata/runs 96=devdata/runs96 128=devdata/runs128
}
main "$@"; exit
