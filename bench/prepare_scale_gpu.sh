#!/usr/bin/env bash
# Prepare what bench/scale_gpu.sh needs on a GPU machine that has no internet, no pandas and no
# bm3d: the crops it fits (git-ignored devdata/crops256, devdata/crops512/CC; made from
# ../shared/data where missing: never commit them) and the wheels of the missing packages (the
# git-ignored .whl/). Run it once here, in the root of the checkout that travels; then carry
# [".whl", "devdata/crops256", "devdata/crops512/CC"] (about 40 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
for size in 256 512; do
    [ -d "devdata/crops$size/CC" ] || "$python" experiments/prepare_data.py --data ../shared/data \
        --out "devdata/crops$size" --size "$size"
done
# The device image (Python 3.12) has torch, numpy, scipy, scikit-image, opencv and matplotlib;
# collect needs pandas, the blends bm3d (the versions of this checkout's environment).
wheels=(pandas==3.1.1 python-dateutil==4.0.0 six==1.17.0 tzdata==2026.6 bm3d==4.0.3 bm4d==4.2.5
    PyWavelets==1.9.0)
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
echo "crops: $(du -sh devdata/crops256 devdata/crops512/CC | tr '\n\t' '  ')"
echo "wheels in .whl: $(ls .whl | tr '\n' ' ')"
