#!/usr/bin/env bash
# The command-line quickstart: train the default model, draw samples, keep the run folder.
# Usage: VAECLI_DATA_DIR=../shared/data bash examples/shell_quickstart.sh [extra `vae train` options]
set -euo pipefail

RUN=$(vae train -q --data mnist --likelihood bernoulli "$@")   # prints the run folder on stdout
echo "trained: $RUN" >&2
vae sample "$RUN" --n 64 --seed 0 --out "$RUN/samples.png" --force
vae sample "$RUN" --n 64 --seed 0 --mode sample --out "$RUN/drawn.png" --force
echo "samples: $RUN/samples.png (probabilities), $RUN/drawn.png (drawn pixels)" >&2
