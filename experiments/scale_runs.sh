#!/usr/bin/env bash
# Issue 26: the reproduction at the paper's scale. DIP runs of centre crops at 128x128 and
# 256x256, then the whole 512x512 CC images; 3000 iterations (5000 at 512x512, the upper end of
# the paper's 3000-5000: DIP's best iteration doubles with the side, and at 256x256 its median is
# already 2580), a snapshot every 20, in bf16
# (PRECISION; the shipped CPU fast path, whose quality against fp32 is docs/REPRODUCTION.md
# section 8). Resumable: rerun after an interruption (a stop signal saves the fit; a kill loses at
# most --checkpoint_every iterations per image).
#
#   nohup experiments/scale_runs.sh > devdata/logs/scale_runs.log 2>&1 &
#   python -m experiments.precision_study collect --runs devdata/scale --results results/scale
#
# Two streams, one thread each (one per core), over one list; the two processes on one folder
# share its images through run_BDN.py's per-image locks. The list: the 5 CC pairs at 256x256,
# seed 0 (the report set); 30 PolyU pairs at seed 0 (every 3rd by name: training and tuning),
# every 5th of them first (the names run camera by camera, so that the first crops in cover all
# four cameras); the CC pairs at 256x256 at seed 1 (seed averaging, the blend); at 128x128, 10
# PolyU pairs (every 10th) and the CC pairs from the first one's network (transfer learning,
# `polyu1`; these two complete the 128 px column in about two hours); the same transfer at 64x64
# (from the first of precision_runs.sh's 20 PolyU pairs; seeds 0-2, as its scratch runs); the CC
# pairs at seed 2; the 4 noisiest PolyU pairs outside the 30 (tuning that covers PolyU's whole
# noise range: experiments/noise_levels.py); the CC pairs at 256x256 from the first PolyU pair's
# network (after the seeds: on a new machine that network must be fitted again, an hour); the
# rest of the 30 PolyU pairs; the CC images at 512x512, seed 0; the CC pairs at 256x256, seeds
# 0-1, again where their snapshots are gone (the blend of the seed mean). The second stream first
# fits the 5 CC pairs at 128x128, seed 0, then the other transfer inits at 64x64 (`chains64`), CBM3D
# on the whole 512x512 images (`cbm3d512`), BIQAN at 64 px (`biqan`), the first CC image at
# 512x512 (so that the longest runs start early: denoise.py's default check at the paper's size),
# BIQAN at 128 px, then the list.
# Runs go to devdata/scale/<size>px/<precision>/<set>[_<init>]_s<seed>; after each folder
# `collect` copies the per-iteration rows (no pixels) of its finished images under results/scale,
# to commit, and `blend_study compute` adds the CBM3D blends of their picks under results/blend
# (they need the snapshots, which a lost machine takes). A crop whose rows are there already is
# not fitted again (on a new machine too).
# `experiments/scale_runs.sh gpu` runs instead the list for one call on a lent GPU
# (bench/scale_gpu.sh): what results/ lacks at 512 and 256 px, several fits at once on the device.
# `PRECISION=fp32 THREADS=2 experiments/scale_runs.sh cc256` fits only the CC crops at 256x256, seed
# 0, one at a time on two threads, each collected as it finishes: in fp32, section 8's paired check
# of bf16 at the study's size (and the list for a CPU without bf16 instructions, where the bf16
# lists refuse to start); `cc512` the same for the whole CC images at 512x512 (LARGE_ITERATIONS;
# state saved every 100 iterations, about 7 minutes of a two-thread fp32 fit on an AVX2 CPU): on
# such a CPU, the paper's scale in the reference precision, section 8's check standing for its
# comparison with the bf16 rows. `experiments/scale_runs.sh polyu256` (fp32, THREADS=1) fits the
# PolyU30 crops at 256x256 that have no rows in either precision, two at a time, as section 9's
# tuning stand-ins for bf16; it starts only once section 8's check has passed (`python -m
# experiments.precision_study pooling`), about 17 hours for the 20 crops on two cores (2.0 s per
# iteration each). `experiments/scale_runs.sh fp32` runs polyu256, BIQAN at 256 px trained on
# its fp32 crops (about 2 hours), then cc512 on two threads: such a CPU's whole list in one
# command.
# Environment: PY, CODE, THREADS (experiments/runs_setup.sh), GPU_ID (cpu, or a CUDA device such as
# 0: every fit, BIQAN's training and scoring run there), ITERATIONS (3000; 512x512:
# LARGE_ITERATIONS, 5000), CHECKPOINT_EVERY (run_BDN.py's default; cc512: 100), PRECISION (bf16),
# STUDY (scale: the devdata/ and results/ folder of the runs; the 64 px transfer runs go with
# precision_runs.sh's 64 px scratch runs they are compared with, 1200 iterations, from the same
# PolyU crop as at 128 px), PARALLEL (1: run_BDN.py processes per fit folder, sharing its images
# through their locks), COLLECT (1; 0: no collect and blend after each folder, bench/scale_gpu.sh
# does them once at the end).
set -u
main() {
    . "$(dirname "$0")/runs_setup.sh"
    runs_setup
    local list=${1:-cpu} sizes
    case $list in
        cpu) sizes="64 128 256 512" ;;
        gpu) sizes="256 512" ;;
        cc256 | cc512) sizes=${list#cc} ;;
        polyu256 | fp32)
            sizes=256
            [ "$list" = polyu256 ] || sizes="256 512"
            if [ "${PRECISION:-fp32}" != fp32 ]; then
                echo "error: $list fits in fp32 (section 8's stand-ins); unset PRECISION" >&2
                return 2
            fi
            PRECISION=fp32
            "$PY" -m experiments.precision_study pooling || {
                echo "error: section 8's check has not passed: the PolyU crops wait for bf16" >&2
                return 2
            }
            ;;
        *) echo "error: unknown list '$list' (cpu, gpu, cc256, cc512, polyu256 or fp32)" >&2; return 2 ;;
    esac
    native_precision "${PRECISION:-bf16}" "set PRECISION=fp32 (its rows go to <size>px/fp32)" \
        || return 2
    prepare_crops $sizes
    # subset SIZE SET: the folder of the pairs of SET (PolyU<N>: every 3rd (N=30) or 10th (N=10)
    # PolyU pair, N of them; N=20: every 5th, the 64 px set of precision_runs.sh; PolyUnoisy4:
    # the 4 noisiest PolyU pairs outside PolyU30, experiments/noise_levels.py; CC: all)
    subset() {
        case $2 in
            PolyU30) crop_subset "$1" "$2" PolyU 3 30 ;;
            PolyU10) crop_subset "$1" "$2" PolyU 10 10 ;;
            PolyU20) crop_subset "$1" "$2" PolyU 5 20 ;;
            PolyUnoisy4)
                "$PY" -m experiments.noise_levels "devdata/crops$1/PolyU" --noisiest 4 \
                    --exclude "$(subset "$1" PolyU30)" --copy_to "devdata/crops$1/$2" >&2
                echo "devdata/crops$1/$2"
                ;;
            *) crop_subset "$1" "$2" CC 1 100 ;;
        esac
    }
    # pending SIZE SET NAME [STEMS]: prints a folder (devdata/pending/...) of SET's crops at SIZE
    # that have no rows under results/<STUDY>/<SIZE>px/<precision>/NAME yet, or of the crops
    # STEMS alone (separated by spaces); prints nothing when none is left (`pending_crops`). So a
    # new machine, whose devdata/ is empty, fits only what the repository lacks.
    pending() {
        local layout=$1px/${PRECISION:-bf16}/$3
        pending_crops "$(subset "$1" "$2")" "results/${STUDY:-scale}/$layout" \
            "devdata/pending/$layout${4:+_${4// /+}}${SHARD:+_shard${SHARD// /-}}" "${4:-}"
    }
    # run SIZE SET SEED [INIT NET [STEMS]]: fit SET's pending crops at SIZE from scratch, or from
    # the network NET (a saved net.pt), into devdata/<STUDY>/.../<SET>_<INIT>_s<SEED>, in PARALLEL
    # processes; with STEMS, those crops only, rows or not; SHARD as for `pending_crops`
    run() {
        local name=$2${4:+_$4}_s$3 folder copy fits=()
        folder=$(pending "$1" "$2" "$name" "${6:-}")
        if [ -z "$folder" ]; then
            echo "$(date -Is) $1px $name: every crop has its rows in results/${STUDY:-scale}"
            return
        fi
        local out=devdata/${STUDY:-scale}/$1px/${PRECISION:-bf16}/$name
        echo "$(date -Is) $1px $2 seed $3 ${4:-scratch} ${6:-} -> $out"
        for copy in $(seq "${PARALLEL:-1}"); do
            nice -n 5 "$PY" "$CODE/run_BDN.py" --dataset_real_path "$folder/real" \
                --dataset_mean_path "$folder/mean" --output_path "$out" \
                --num_iter "${ITERATIONS:-3000}" --save_iter 20 --seed "$3" \
                --init_from "${5:-scratch}" --gpu_id "${GPU_ID:-cpu}" \
                --precision "${PRECISION:-bf16}" --quiet \
                ${CHECKPOINT_EVERY:+--checkpoint_every "$CHECKPOINT_EVERY"} &
            fits+=($!)
        done
        wait "${fits[@]}"
        [ "${COLLECT:-1}" = 1 ] || return 0
        "$PY" -m experiments.precision_study collect --runs "devdata/${STUDY:-scale}" \
            --results "results/${STUDY:-scale}"
        # the CBM3D blends of the shipped rules' picks, while the snapshots are here
        nice -n 5 "$PY" -m experiments.blend_study compute > /dev/null
    }
    # first_stem SIZE SET: the name, without extension, of SET's first crop at SIZE
    first_stem() {
        local real
        real=$(ls "$(subset "$1" "$2")/real" | head -n 1)
        echo "${real%.*}"
    }
    # transfer SIZE POLYU [SEED]: the CC crops at SIZE and SEED (default 0) from the final network
    # of the first image of POLYU's seed-0 run at SIZE (experiments/transfer.py's `polyu1`); where
    # that network is not on this machine, its image is fitted again first
    transfer() {
        local stem net seed=${3:-0}
        if [ -z "$(pending "$1" CC "CC_polyu1_s$seed")" ]; then
            run "$1" CC "$seed" polyu1  # says so
            return
        fi
        stem=$(first_stem "$1" "$2")
        net=devdata/${STUDY:-scale}/$1px/${PRECISION:-bf16}/$2_s0/$stem/net.pt
        [ -f "$net" ] || PARALLEL=1 run "$1" "$2" 0 "" "" "$stem"
        if [ -f "$net" ]; then
            run "$1" CC "$seed" polyu1 "$net"
        else
            echo "$(date -Is) no $net yet"
        fi
    }
    # transfer64 SEED: `transfer` at 64x64 (precision_runs.sh's folders, 1200 iterations)
    transfer64() { STUDY=precision ITERATIONS=1200 transfer 64 PolyU20 "$1"; }
    # chains64: section 2's other transfer inits at 64x64 beside transfer64's polyu1, in bf16
    # and 1200 iterations as its scratch runs: the CC crops chained in name order (`previous`)
    # and from a chain of 8 PolyU crops fitted 300 iterations each (`polyu_chain8_short`); one
    # process (a chain cannot be shared), refitted in full on a new machine (about an hour)
    chains64() {
        local runs=devdata/precision/64px/${PRECISION:-bf16} name left=""
        for name in CC_{previous,polyu_chain8_short}_s{0,1,2}; do
            left+=$(STUDY=precision pending 64 CC "$name")
        done
        if [ -n "$left" ]; then
            echo "$(date -Is) 64px transfer chains -> $runs"
            nice -n 5 "$PY" -m experiments.transfer run --crops devdata/crops64 --runs "$runs" \
                --code "$CODE" --inits previous polyu_chain8_short --seeds 0 1 2 \
                --num_iter 1200 --precision "${PRECISION:-bf16}" --gpu_id "${GPU_ID:-cpu}"
            "$PY" -m experiments.precision_study collect --runs devdata/precision \
                --results results/precision
        fi
    }
    # cbm3d512: CBM3D on the whole 512x512 pairs (10 PolyU, every 10th, tune σ; the 5 CC),
    # section 7's baseline, its rows under results/ (it computes only the rows missing there;
    # about 45 min)
    cbm3d512() {
        nice -n 5 "$PY" experiments/cbm3d_full.py --data devdata/crops512 \
            --tables results/cbm3d/512px --polyu_every 10
    }
    # refit SIZE SET SEED: fit each of SET's crops at SIZE and SEED whose snapshots this machine
    # lacks, rows or not (bit-identical to the committed rows): for what needs the pixels
    refit() {
        local real
        for real in $(ls "$(subset "$1" "$2")/real"); do
            run "$1" "$2" "$3" "" "" "${real%.*}"
        done
    }
    # biqan SIZE POLYU MIN SEED...: BIQAN with the paper's recipe (and on relative labels)
    # trained on POLYU's seed-0 run at SIZE (at least MIN crops) and scored on the CC runs of
    # each SEED (experiments/biqan_scale.py), their scores under results/biqan; the snapshots
    # it needs are fitted again where a machine lost them (bit-identical to the committed rows),
    # unless every CC run of each SEED has its scores there already
    biqan() {
        local size=$1 set=$2 min=$3 seed labels scores missing=""
        shift 3
        for labels in absolute relative; do
            for seed in "$@"; do
                scores=results/biqan/${size}px/${PRECISION:-bf16}/$labels/CC_s$seed
                [ "$(ls "$scores" 2>/dev/null | wc -l)" -ge "$(ls "$(subset "$size" CC)/real" | wc -l)" ] \
                    || missing+=" $labels/CC_s$seed"
            done
        done
        if [ -z "$missing" ]; then  # a new machine need not fit the runs again
            echo "$(date -Is) BIQAN at ${size}px: every CC run has its scores in results/biqan"
            return
        fi
        refit "$size" "$set" 0
        for seed in "$@"; do
            refit "$size" CC "$seed"
        done
        for labels in absolute relative; do
            nice -n 5 "$PY" -m experiments.biqan_scale --size "$size" --labels "$labels" \
                --runs "devdata/${STUDY:-scale}" --polyu "${set}_s0" --min_images "$min" \
                --seeds "$@" --gpu_id "${GPU_ID:-cpu}"
        done
    }
    # polyu256: section 8's pooling on a CPU without bf16 instructions: the PolyU30 crops at
    # 256x256 without rows in bf16 or fp32, fitted in fp32 (seed 0) two at a time, one process
    # each (THREADS=1: 1.2x the throughput of one fit on two threads), each pair collected as it
    # ends; first the crops that a stopped run left with saved state, the furthest on first (so
    # that they finish before new ones start), then the others, every 5th first (the names run
    # camera by camera)
    polyu256() {
        local fits=devdata/${STUDY:-scale}/256px/fp32/PolyU30_s0 stem started="" others=()
        for stem in $(pending_stems "$(subset 256 PolyU30)" \
            "results/${STUDY:-scale}/256px/"{bf16,fp32}/PolyU30_s0 \
            | awk '{ print (NR - 1) % 5, NR, $0 }' | sort -n -k1,1 -k2,2 | cut -d " " -f 3); do
            if [ -f "$fits/$stem/state.pt" ]; then  # its last metrics row's iteration, the stem
                started+="$(tail -n 1 "$fits/$stem/metrics.csv" | cut -d , -f 1) $stem"$'\n'
            else
                others+=("$stem")
            fi
        done
        set -- $(printf %s "$started" | sort -s -rn -k1,1 | cut -d " " -f 2) "${others[@]}"
        while [ $# -gt 0 ]; do
            PARALLEL=2 run 256 PolyU30 0 "" "" "$1${2:+ $2}"
            shift $(($# > 1 ? 2 : 1))
        done
    }
    # stream: the 256 list, in order
    stream() {
        run 256 CC 0; SHARD="5 0" run 256 PolyU30 0; run 256 CC 1; run 128 PolyU10 0
        transfer 128 PolyU10; transfer64 0; transfer64 1; transfer64 2
        run 256 CC 2; run 256 PolyUnoisy4 0; transfer 256 PolyU30; run 256 PolyU30 0
        ITERATIONS=${LARGE_ITERATIONS:-5000} run 512 CC 0
        refit 256 CC 0; refit 256 CC 1  # their snapshots: the seed mean's CBM3D blend
    }
    # gpu: the list of one device call, in two parts at once (the 512 px fits are the longest):
    # the CC images at 512x512; the transfer runs at 256 px (after the PolyU crop whose network
    # they start from, where it is not here), then the PolyU30 crops at 256x256 (one after the
    # other: run_BDN.py refuses a folder that another run with other inputs is writing)
    gpu() {
        local large
        COLLECT=0 PARALLEL=${PARALLEL_512:-3} ITERATIONS=${LARGE_ITERATIONS:-5000} run 512 CC 0 &
        large=$!
        COLLECT=0 PARALLEL=2 transfer 256 PolyU30
        COLLECT=0 PARALLEL=${PARALLEL_256:-4} run 256 PolyU30 0
        wait "$large"
    }
    # cc SIZE: the CC images at SIZE without rows (seed 0), one at a time, each collected as it
    # ends; at 512x512 LARGE_ITERATIONS and the state saved every CHECKPOINT_EVERY (100)
    cc() {
        local stem
        if [ "$1" = 512 ]; then  # seen by `run`, for this list only
            local ITERATIONS=${LARGE_ITERATIONS:-5000} CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-100}
        fi
        for stem in $(pending_stems "$(subset "$1" CC)" \
            "results/${STUDY:-scale}/$1px/${PRECISION:-bf16}/CC_s0"); do
            run "$1" CC 0 "" "" "$stem"
        done
    }
    # biqan_fp32: BIQAN at 256 px, both kinds of labels at once (one thread each), trained on the
    # PolyU30 crops fitted here in fp32 (polyu256's 20; the bf16 ones have no snapshots here) and
    # scored on the fp32 CC run (seed 0, section 8's)
    biqan_fp32() {
        local labels
        for labels in absolute relative; do
            nice -n 5 "$PY" -m experiments.biqan_scale --size 256 --precision fp32 \
                --labels "$labels" --runs "devdata/${STUDY:-scale}" --polyu PolyU30_s0 \
                --out "devdata/biqan_scale/256px/fp32/$labels" --min_images 20 --seeds 0 \
                --gpu_id "${GPU_ID:-cpu}" &
        done
        wait
    }
    # fp32: a CPU without bf16 instructions, start to end: polyu256 (one thread a fit), BIQAN on
    # its crops, then cc512 (two threads)
    fp32() {
        polyu256
        biqan_fp32
        OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 cc 512
    }
    case $list in
        gpu | polyu256 | fp32) "$list" ;;
        cc256 | cc512) cc "$sizes" ;;
    esac
    [ "$list" = cpu ] || return 0
    stream & sleep 5; run 128 CC 0; chains64; cbm3d512
    STUDY=precision ITERATIONS=1200 biqan 64 PolyU20 20 0 1 2
    ITERATIONS=${LARGE_ITERATIONS:-5000} run 512 CC 0 "" "" "$(first_stem 512 CC)"
    biqan 128 PolyU10 10 0; stream
    wait
}
main "$@"; exit
