#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one command (about 6 minutes on one modern GPU):
# the device, the tests marked for devices on CUDA, training throughput against the PyTorch
# example loop on the same GPU, the profiler's top kernels, time to 100 nats, and whether the
# conv models are faster with channels-last convolutions there.
#
#     VAECLI_DATA_DIR=../shared/data bash bench/gpu_check.sh [PART...]   # log: $OUT/gpu_check.log
#
# PARTs (default: all, in this order): tests, throughput, profile, quality, layout; name some to rerun
# only those. MNIST comes from $VAECLI_DATA_DIR; where that is unset and .gpu_data/mnist.tar.gz
# is there (bench/gpu_pack.sh makes it, for a machine that cannot reach ../shared), it is
# unpacked to a temporary folder. PYTHON names the interpreter (default: .venv/bin/python if
# there, else python3); vaecli is installed into it (offline, without dependencies) when its
# entry points are missing. The exit code is 1 when any part failed; every part runs whatever
# the others did, each under its own time limit (the limits add up to 12 minutes; the parts take about 6).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-/tmp}/gpu_check.log"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
[ $# -gt 0 ] || set -- tests throughput profile quality layout
PARTS=("$@")
for name in "${PARTS[@]}"; do
    case $name in tests|throughput|profile|quality|layout) ;; *) echo "gpu_check.sh: no part '$name' (tests, throughput, profile, quality, layout)" >&2; exit 2;; esac
done
export PYTHONUNBUFFERED=1 VAECLI_PROGRESS_SECONDS=3600
exec > >(tee "$LOG") 2>&1
failed=0
part() { echo; echo "== $1 ($(date -u '+%Y-%m-%d %H:%M:%S UTC'))"; }
run() { local limit=$1; shift; timeout "$limit" "$@" || { echo "!! failed (exit $?): $*"; failed=1; }; }
wanted() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

part "the device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -z "${VAECLI_DATA_DIR:-}" ] && [ -f .gpu_data/mnist.tar.gz ]; then
    export VAECLI_DATA_DIR="$(mktemp -d)"
    tar -xzf .gpu_data/mnist.tar.gz -C "$VAECLI_DATA_DIR" || { echo "!! cannot unpack .gpu_data/mnist.tar.gz"; exit 1; }
    echo "MNIST unpacked to $VAECLI_DATA_DIR"
fi
echo "data: ${VAECLI_DATA_DIR:-unset (vaecli downloads MNIST)}"
"$PYTHON" - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"!! torch {torch.__version__} sees no CUDA device")
print("torch", torch.__version__, "CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(0))
PY
if ! "$PYTHON" -c 'import sys, importlib.metadata as m; sys.exit(not m.entry_points(group="vaecli.datasets", name="mnist"))'; then
    part "installing vaecli (no network: its dependencies must be there already)"
    offline=(--quiet --no-deps --no-index --no-build-isolation)
    # (an editable install needs setuptools 64; a plain one any)
    "$PYTHON" -m pip install "${offline[@]}" -e . || run 120 "$PYTHON" -m pip install "${offline[@]}" .
fi

if wanted tests; then
    part "tests marked for devices, on CUDA (every likelihood and precision, eval, encode, resume, --compile, no waits)"
    run 210 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda tests/test_on_devices.py tests/test_step_waits.py
fi
if wanted throughput; then
    part "training images/s against the PyTorch example loop, on the same GPU (eager and --compile)"
    run 150 "$PYTHON" bench/train_throughput.py --device cuda --epochs 2 --default --compile
fi
if wanted profile; then
    part "what limits the step: the profiler's top kernels (default recipe, then --compile)"
    run 60 "$PYTHON" bench/gpu_profile.py --device cuda
    run 60 "$PYTHON" bench/gpu_profile.py --device cuda --compile
fi
if wanted quality; then
    part "wall time to 100 test nats against the example loop, on the GPU"
    run 150 "$PYTHON" bench/time_to_quality.py --device cuda
fi
if wanted layout; then
    part "the conv models' images/s with channels-last convolutions against the default layout"
    run 90 "$PYTHON" bench/conv_layout.py --device cuda --rounds 2
fi

part "done: $([ $failed = 0 ] && echo 'every part passed' || echo 'some parts FAILED (!! above)')"
exit $failed
