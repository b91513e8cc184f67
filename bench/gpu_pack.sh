#!/usr/bin/env bash
# MNIST packed for a GPU machine that cannot reach ../shared (one lent for a session, say):
# writes .gpu_data/mnist.tar.gz (about 11 MB; git ignores the folder), which bench/gpu_check.sh
# unpacks there when VAECLI_DATA_DIR is unset. Send the folder with the checkout.
#
#     VAECLI_DATA_DIR=../shared/data bash bench/gpu_pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source="${VAECLI_DATA_DIR:?name the folder that holds MNIST/raw/}"
[ -f "$source/MNIST/raw/train-images-idx3-ubyte" ] || { echo "gpu_pack.sh: no MNIST/raw/ in $source" >&2; exit 1; }
mkdir -p .gpu_data
tar -czf .gpu_data/mnist.tar.gz.part -C "$source" MNIST/raw
mv .gpu_data/mnist.tar.gz.part .gpu_data/mnist.tar.gz
ls -l .gpu_data/mnist.tar.gz
