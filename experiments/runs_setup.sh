# Sourced by the run scripts of experiments/ (precision_runs.sh, scale_runs.sh, size_runs.sh).
#
# runs_setup: go to the repository, THREADS threads per process (default 1: two one-thread fits
# fill two cores; THREADS=2 with one fit finishes that fit sooner), devdata/logs, PY (default
# .venv/bin/python) and CODE (a frozen copy of the repository whose run_BDN.py the runs use, so
# that edits to the checkout cannot change running experiments; default this checkout's HEAD,
# exported once); tcmalloc preloaded where it is installed (Debian's libtcmalloc-minimal4):
# glibc's malloc maps DIP's large activations afresh at every iteration, tcmalloc reuses them,
# 1.3x faster at 256 px and 1.8x or more at 512 px, the fits' numbers the same bit for bit
# (results/bench/cpu_2026-12-07_allocator.md).
runs_setup() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
    PY=${PY:-$PWD/.venv/bin/python}
    export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
    local tcmalloc
    tcmalloc=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null \
        | awk '$1 == "libtcmalloc_minimal.so.4" { print $NF; exit }')
    [ -z "$tcmalloc" ] || export LD_PRELOAD=$tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    mkdir -p devdata/logs
    if [ -z "${CODE:-}" ]; then
        CODE=devdata/code/$(git rev-parse --short HEAD)
        if [ ! -f "$CODE/run_BDN.py" ]; then mkdir -p "$CODE" && git archive HEAD | tar -x -C "$CODE"; fi
    fi
}

# native_precision PRECISION [ALTERNATIVE]: fails with one line, ending with ALTERNATIVE, when
# PRECISION is bf16 and the fits run on a CPU (GPU_ID unset or cpu) without bf16 instructions
# (AVX512-BF16 or AMX), where bf16 runs about 8 times slower than fp32
# (results/bench/cpu_2026-12-06_avx2.md): a list of weeks, not days.
native_precision() {
    [ "$1" = bf16 ] && [ "${GPU_ID:-cpu}" = cpu ] || return 0
    [ -z "$("$PY" -c 'from utils.dip.devices import bf16_instructions; print(bf16_instructions())')" ] \
        || return 0
    echo "error: this CPU has no bf16 instructions (AVX512-BF16 or AMX), where bf16 fits run about" \
        "8 times slower than fp32: run the bf16 fits on a CPU that has them${2:+, or $2}" >&2
    return 1
}

# prepare_crops SIZE...: the centre crops of every PolyU and CC pair at each size, once.
prepare_crops() {
    local size
    for size in "$@"; do
        [ -d "devdata/crops$size/CC" ] || "$PY" experiments/prepare_data.py --data ../shared/data \
            --out "devdata/crops$size" --size "$size" > "devdata/logs/prepare_data_$size.log"
    done
}

# crop_subset SIZE NAME DATASET EVERY COUNT: prints the folder devdata/crops<SIZE>/<NAME> holding
# every EVERY-th pair (by name, from the first) of DATASET's crops, at most COUNT of them.
crop_subset() {
    local crops=devdata/crops$1 folder=devdata/crops$1/$2 real
    mkdir -p "$folder/real" "$folder/mean"
    for real in $(ls "$crops/$3/real" | awk -v every="$4" 'NR % every == 1 || every == 1' | head -n "$5"); do
        cp -n "$crops/$3/real/$real" "$folder/real/"
        cp -n "$crops/$3/mean/${real%.*}".* "$folder/mean/"
    done
    echo "$folder"
}

# pending_stems FROM RESULTS...: the stems of FROM/real's pairs that have no rows <stem>.csv in
# any of the RESULTS folders yet, one a line, in name order (a list fitted crop by crop, each
# collected as it finishes).
pending_stems() {
    local real results fitted
    for real in $(ls "$1/real"); do
        fitted=""
        for results in "${@:2}"; do
            [ -f "$results/${real%.*}.csv" ] && fitted=1
        done
        [ -n "$fitted" ] || echo "${real%.*}"
    done
}

# pending_crops FROM RESULTS TO [STEMS]: copies into TO/real and TO/mean the pairs of FROM/real
# and FROM/mean that have no rows RESULTS/<stem>.csv yet, or the pairs STEMS alone (names
# separated by spaces; rows or not); with SHARD="N I", only every N-th pair of FROM by name from
# the I-th (0-based). Prints TO, or nothing when TO holds no pair (TO is made only to hold one).
# Pairs are only added to TO, never removed: two processes may share it, and run_BDN.py skips the
# images it has finished.
pending_crops() {
    local real stem index=0
    for real in $(ls "$1/real"); do
        stem=${real%.*}
        index=$((index + 1))
        if [ -n "${SHARD:-}" ] && [ $(((index - 1) % ${SHARD% *})) != "${SHARD#* }" ]; then
            continue
        elif [ -n "${4:-}" ]; then
            case " $4 " in *" $stem "*) ;; *) continue ;; esac
        elif [ -f "$2/$stem.csv" ]; then
            continue
        fi
        mkdir -p "$3/real" "$3/mean"
        cp -n "$1/real/$real" "$3/real/"
        cp -n "$1/mean/$stem".* "$3/mean/"
    done
    [ -z "$(ls "$3/real" 2>/dev/null)" ] || echo "$3"
}
