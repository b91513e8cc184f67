"""Device choice: the logic for every kind of machine, without pretending hardware exists."""

import copy

import pytest
import torch

from vaecli.devices import CHANNELS_LAST_DEVICES, LAYOUT_AWARE, Hardware, choose_device, place
from vaecli.errors import UsageError, VaeError
from vaecli.models import ModelSpec, build_model

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


def _conv_models() -> dict[str, torch.nn.Module]:
    """The built-in models with convolutions, on 3-channel 10x10 images (a layout that matters:
    with one channel, channels-last and contiguous strides are the same)."""
    torch.manual_seed(0)
    shape = (3, 10, 10)
    vae = ModelSpec(input_shape=shape, latent_dim=4, architecture="conv", likelihood="categorical",
                    likelihood_options={"bins": 4},
                    architecture_options={"channels": "8,8", "hidden": "16"})  # fmt: skip
    hierarchy = ModelSpec(input_shape=shape, latent_dim=0, model="hierarchical", likelihood="gaussian",
                          model_options={"width": 8, "groups": "1,1"})  # fmt: skip
    return {"conv vae": build_model(vae), "conv hierarchy": build_model(hierarchy)}


@pytest.mark.parametrize("name", ["conv vae", "conv hierarchy"])
def test_on_the_cpu_convolutions_run_channels_last_with_the_same_numbers(name):
    """place() makes the 2-D convolutions' weights channels-last on the CPU (oneDNN's faster
    kernels); the model's terms and gradients are those of the default layout, to rounding, and
    the decoder's parameters reach the likelihood contiguous."""
    model = _conv_models()[name]
    default = copy.deepcopy(model)
    placed = place(model, torch.device("cpu"))
    convolutions = [m for m in placed.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    channels_last = [m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions]
    assert convolutions and all(channels_last)
    # (for one input channel or a 1x1 kernel the two layouts' strides are the same)
    spread = [m.weight for m in convolutions if m.weight.shape[1] > 1 and m.weight[0, 0].numel() > 1]
    assert spread and all(not weight.is_contiguous() for weight in spread)
    x = placed.likelihood.prepare(torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8), torch.Generator())
    eps = torch.randn(5, 2, placed.noise_dim())
    results = []
    for net in (placed, default):
        terms = net(x, eps, True, False)
        loss = -(terms.reconstruction.mean() - terms.kl.sum(-1).mean())
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        results.append((terms.reconstruction, terms.kl, terms.log_weight, grads))
        assert net.decode(torch.randn(2, sum(net.code_widths()[-1:]))).is_contiguous()
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


class ForeignBlock(torch.nn.Module):
    """A plugin's module: its code may .view() its activations, so its model keeps the layout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)


def test_a_model_with_modules_of_another_package_keeps_the_default_layout():
    model = _conv_models()["conv vae"]
    model.extra = ForeignBlock()
    place(model, torch.device("cpu"))
    assert all(p.is_contiguous() for p in model.parameters())
    assert ForeignBlock.__module__.partition(".")[0] not in LAYOUT_AWARE
    assert "cuda" not in CHANNELS_LAST_DEVICES  # (until a GPU run has measured it)
