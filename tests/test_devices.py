"""Device choice: the logic for every kind of machine, without pretending hardware exists."""

import pytest
import torch

from vaecli.devices import Hardware, choose_device
from vaecli.errors import UsageError, VaeError

CPU_ONLY = Hardware(cuda_count=0, mps=False)
MAC = Hardware(cuda_count=0, mps=True)
TWO_GPUS = Hardware(cuda_count=2, mps=False)


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [(CPU_ONLY, "cpu"), (MAC, "mps"), (TWO_GPUS, "cuda:0"), (Hardware(cuda_count=1, mps=True), "cuda:0")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(hardware, expected):
    assert choose_device("auto", hardware) == torch.device(expected)


def test_explicit_devices():
    assert choose_device("cuda:1", TWO_GPUS) == torch.device("cuda", 1)
    assert choose_device("cuda", TWO_GPUS) == torch.device("cuda", 0)
    assert choose_device("CPU", TWO_GPUS) == torch.device("cpu")
    assert choose_device("mps", MAC) == torch.device("mps")


@pytest.mark.parametrize("request_", ["tpu", "cuda:x", "cpu:0", "mps:1", "", "cuda:-1"])
def test_unknown_device_is_a_usage_error(request_):
    with pytest.raises(UsageError, match="unknown device"):
        choose_device(request_, TWO_GPUS)


@pytest.mark.parametrize(
    ("request_", "hardware", "message"),
    [("cuda", CPU_ONLY, "no usable CUDA"), ("cuda:2", TWO_GPUS, "has 2"), ("mps", CPU_ONLY, "MPS")],
)
def test_missing_hardware_is_a_runtime_error(request_, hardware, message):
    with pytest.raises(VaeError, match=message) as info:
        choose_device(request_, hardware)
    assert not isinstance(info.value, UsageError)


def test_this_machine_detects_what_torch_sees():
    hw = Hardware.detect()
    assert hw.cuda_count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    device = choose_device("auto")
    assert device.type == ("cuda" if hw.cuda_count else "mps" if hw.mps else "cpu")
    torch.ones(2, device=device).sum()  # the chosen device really runs
