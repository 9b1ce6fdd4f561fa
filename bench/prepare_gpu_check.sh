#!/usr/bin/env bash
# Prepare what bench/gpu_check.py needs on a GPU machine that has no internet and no Keras:
#   devdata/gpu/CC/{real,mean}  the CC pairs from ../shared/data/CC (git-ignored: never commit)
#   .whl/                       wheels of the packages the GPU machine lacks (git-ignored)
# Run it once in the root of the checkout that travels to the GPU machine, with the project's
# Python (for pip). Usage: bench/prepare_gpu_check.sh [SOURCE_CC_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
source_folder="${1:-../shared/data/CC}"
target=devdata/gpu/CC
python="${PYTHON:-python3}"
# The GPU machine's image has torch, numpy, scikit-image, opencv, matplotlib, tqdm, h5py, rich,
# absl-py, ml-dtypes and pytest; Keras and two of its dependencies are missing (Python 3.12 there).
wheels=(keras==3.15.1 namex==0.1.0 optree==0.20.0)

for side in real mean; do
    if [ ! -d "$source_folder/$side" ]; then
        echo "error: $source_folder/$side: no such folder (the CC pairs: real/ and mean/)" >&2
        exit 2
    fi
done
if [ -e "$target" ]; then
    echo "$target exists: left as it is"
else
    mkdir -p "$target"
    cp -r "$source_folder/real" "$source_folder/mean" "$target/"
    chmod -R u+w "$target"
    echo "copied $(ls "$target/real" | wc -l) pairs to $target"
fi
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
echo "wheels in .whl: $(ls .whl | tr '\n' ' ')"
