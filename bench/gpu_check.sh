#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one command (about 8 minutes on one modern GPU):
# the device, the tests marked for devices on CUDA, training throughput against the PyTorch
# example loop on the same GPU, time to 100 nats, and the profiler's top kernels.
#
#     VAECLI_DATA_DIR=../shared/data bash bench/gpu_check.sh       # log: $OUT/gpu_check.log (default /tmp)
#
# PYTHON names the interpreter (default: .venv/bin/python if there, else python3). vaecli is
# installed into it (offline, without dependencies) when its entry points are missing. The exit
# code is 1 when any part failed; every part runs whatever the others did.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-/tmp}/gpu_check.log"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 VAECLI_PROGRESS_SECONDS=3600
exec > >(tee "$LOG") 2>&1
failed=0
part() { echo; echo "== $1 ($(date -u '+%Y-%m-%d %H:%M:%S UTC'))"; }
run() { local limit=$1; shift; timeout "$limit" "$@" || { echo "!! failed (exit $?): $*"; failed=1; }; }

part "the device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(0))' \
    || { echo "!! torch sees no CUDA device"; exit 1; }
if ! "$PYTHON" -c 'import sys, importlib.metadata as m; sys.exit(not m.entry_points(group="vaecli.datasets", name="mnist"))'; then
    part "installing vaecli (no network: its dependencies must be there already)"
    run 120 "$PYTHON" -m pip install --quiet --no-deps --no-index --no-build-isolation -e .
fi

part "tests marked for devices, on CUDA (every likelihood and precision, eval, encode, resume, --compile, no waits)"
run 300 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda tests/test_on_devices.py tests/test_step_waits.py

part "training images/s against the PyTorch example loop, on the same GPU"
run 150 "$PYTHON" bench/train_throughput.py --device cuda --epochs 2 --default

part "what limits the step: the profiler's top kernels (default recipe, then --compile)"
run 120 "$PYTHON" bench/gpu_profile.py --device cuda
run 120 "$PYTHON" bench/gpu_profile.py --device cuda --compile

part "wall time to 100 test nats against the example loop, on the GPU"
run 240 "$PYTHON" bench/time_to_quality.py --device cuda

part "done: $([ $failed = 0 ] && echo 'every part passed' || echo 'some parts FAILED (!! above)')"
exit $failed
