#!/usr/bin/env bash
# The scale study's remaining fits on a lent GPU, in one device call: experiments/scale_runs.sh's
# `gpu` list (the CC images at 512x512, 5000 iterations; the PolyU30 crops and the transfer runs at
# 256x256; only what results/ lacks) for at most FIT_SECONDS, then the finished images' rows
# (`precision_study collect`) and, where bm3d is installed and time is left, their CBM3D blends
# (`blend_study compute`), and a copy of every file this call wrote under results/ to $OUT/results,
# to copy into results/ here and commit. Fits cut by the budget are stopped with SIGTERM (their
# state is saved: a rerun on the same warm machine resumes them) and give no rows.
#
# Here, once: bench/prepare_scale_gpu.sh (the crops and wheels to carry). On the device machine,
# with carry [".whl", "devdata/crops256", "devdata/crops512/CC"] and timeout_s 590:
#   bench/scale_gpu.sh 540
# Back here: cp -r <files_at>/results/. results/ && python -m experiments.tables
#
# Usage: bench/scale_gpu.sh [SECONDS (540: the whole call)]. Environment: GPU_ID (0), PY
# (python3), OUT (devdata/scale_gpu_out), FIT_SECONDS (SECONDS - 150), and scale_runs.sh's own
# (PARALLEL_512, PARALLEL_256, LARGE_ITERATIONS, PRECISION).
set -u
cd "$(dirname "$0")/.." || exit 1
seconds=${1:-540}
start=$SECONDS
out=${OUT:-devdata/scale_gpu_out}
export PY=${PY:-python3} CODE=$PWD GPU_ID=${GPU_ID:-0}
mkdir -p "$out/logs" devdata
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    # the packages the device image lacks (bench/prepare_scale_gpu.sh downloaded them)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/scale_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/scale_site
fi
# results/ as it came (its files' checksums): what differs at the end goes to $out
checksums() { find results -type f -exec md5sum {} + | sort -k 2; }
checksums > devdata/scale_gpu.before
fit_seconds=${FIT_SECONDS:-$((seconds - 150))}
echo "$(date -Is) fitting for at most $fit_seconds s on GPU $GPU_ID"
timeout -s TERM -k 60 "$fit_seconds" experiments/scale_runs.sh gpu > "$out/logs/scale_runs.log" 2>&1
status=$?
echo "$(date -Is) fits ended (exit $status; 124: the budget stopped them); collecting"
"$PY" -m experiments.precision_study collect --runs devdata/scale --results results/scale
left=$((seconds - (SECONDS - start) - 10))
if "$PY" -c "import bm3d" 2> /dev/null && [ "$left" -gt 30 ]; then
    echo "$(date -Is) CBM3D blends of the new picks, for at most $left s"
    timeout "$left" "$PY" -m experiments.blend_study compute > "$out/logs/blend.log" 2>&1
fi
checksums | diff devdata/scale_gpu.before - | sed -n 's/^> [0-9a-f]*  //p' | while read -r file; do
    mkdir -p "$out/$(dirname "$file")"
    cp "$file" "$out/$file"
done
echo "$(date -Is) $(find "$out/results" -name '*.csv' 2> /dev/null | wc -l) file(s) under $out/results"
