"""The hierarchical VAE: its KL and bound against torch.distributions and against numerical
integration over its latents, its codes, and every command run on a trained one."""

import json
import math
from pathlib import Path

import pytest
import torch
from test_cli import draw_pictures, one_error_line, run
from torch.distributions import Normal, kl_divergence

from vaecli.models import ModelSpec, build_model
from vaecli.models.hierarchical import HierarchicalVAE


def tiny(
    cells: str = "dense", groups: str = "1,1", latent: int = 3, shape=(1, 6, 6), seed: int = 0, **options
):
    torch.manual_seed(seed)
    options = {"cells": cells, "groups": groups, "latent": latent, "width": 8, **options}
    spec = ModelSpec(input_shape=shape, latent_dim=0, model="hierarchical", model_options=options)
    model = build_model(spec).double()
    with torch.no_grad():  # priors and posteriors of their own, not a new model's N(0, I) everywhere
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def batch(n: int = 4, shape=(1, 6, 6), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *shape), 0.4, dtype=torch.float64), generator=g)


class Recorder:
    """The posterior and prior parameters each group's layers give in one forward pass, caught
    from the layers themselves (not from the model's own KL code)."""

    def __init__(self, model: HierarchicalVAE) -> None:
        self.posterior, self.prior = [], []
        for group in model.latents:
            group.posterior.register_forward_hook(lambda m, i, out: self.posterior.append(out))
            if group.prior is not None:
                group.prior.register_forward_hook(lambda m, i, out: self.prior.append(out))


def softplus_scale(raw: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(raw + math.log(math.e - 1)) + 1e-4


@pytest.mark.parametrize(("cells", "posterior"), [("dense", "absolute"), ("conv", "absolute"),
                                                 ("dense", "residual"), ("conv", "residual")])  # fmt: skip
def test_each_groups_kl_and_the_log_weights_match_torch_distributions(cells, posterior):
    """(``residual``: below the top, q is N(mu_p + dmu, (sigma_p dsigma)^2), NVAE's residual normal,
    from the prior's outputs and the posterior's.)"""
    model = tiny(cells, groups="1,2", latent=2, posterior=posterior)
    x = batch()
    eps = torch.randn(
        4, 3, model.noise_dim(), generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    recorder = Recorder(model)
    terms = model(x, eps, weights=True)
    assert terms.kl.shape == (4, 3) and terms.log_weight.shape == (4, 3)
    zc = 2
    q = [Normal(out[:, :zc].flatten(1), softplus_scale(out[:, zc:]).flatten(1)) for out in recorder.posterior]
    p = [
        Normal(out[:, :zc].flatten(1), softplus_scale(out[:, zc : 2 * zc]).flatten(1))
        for out in recorder.prior
    ]
    if posterior == "residual":
        q = [q[0], *(Normal(pi.loc + qi.loc, pi.scale * qi.scale) for qi, pi in zip(q[1:], p, strict=True))]
    p = [Normal(torch.zeros_like(q[0].loc), torch.ones_like(q[0].loc)), *p]  # the top group's: N(0, I)
    noise = eps.reshape(12, -1).split(model.dims, 1)
    z = [qi.loc + qi.scale * e for qi, e in zip(q, noise, strict=True)]
    kl = torch.stack([kl_divergence(qi, pi).sum(-1) for qi, pi in zip(q, p, strict=True)], -1)
    torch.testing.assert_close(terms.kl, kl.view(4, 3, 3).mean(1))
    log_p_over_q = sum(
        (pi.log_prob(zi) - qi.log_prob(zi)).sum(-1) for qi, pi, zi in zip(q, p, z, strict=True)
    )
    torch.testing.assert_close(terms.log_weight - terms.reconstruction, log_p_over_q.view(4, 3))
    # The codes each group drew are those the decoder saw: decoding them gives the reconstruction.
    params = model.decode(torch.cat(z, dim=1))
    repeated = x.repeat_interleave(3, dim=0)
    torch.testing.assert_close(terms.reconstruction, model.likelihood.log_prob(repeated, params).view(4, 3))


def test_the_kl_is_the_mean_of_log_q_minus_log_p_over_many_draws():
    model = tiny(groups="1,1,1", latent=2)
    x = batch(2)
    eps = torch.randn(
        2, 40000, model.noise_dim(), generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    with torch.no_grad():
        terms = model(x, eps, weights=True)
    draws = terms.reconstruction - terms.log_weight  # log q - log p of each draw
    error = draws.std(1) / math.sqrt(draws.shape[1])
    assert ((draws.mean(1) - terms.kl.sum(1)).abs() < 4 * error).all(), (
        draws.mean(1),
        terms.kl.sum(1),
        error,
    )


def test_a_vamp_prior_on_the_top_group_is_a_mixture_of_the_top_groups_posteriors():
    model = tiny(groups="1,1", latent=2)
    options = {"cells": "dense", "groups": "1,1", "latent": 2}
    spec = ModelSpec(input_shape=(1, 6, 6), latent_dim=0, model="hierarchical", prior="vamp",
                     prior_options={"k": 4}, model_options=options)  # fmt: skip
    model = build_model(spec).double()
    from torch.distributions import Categorical, Independent, MixtureSameFamily

    mu, logvar = model.encode_top(model.prior.pseudo_inputs)
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(4, dtype=torch.float64)),
                                Independent(Normal(mu, torch.exp(0.5 * logvar)), 1))  # fmt: skip
    z = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(model.prior.log_prob(z), mixture.log_prob(z))
    assert not model.kl_exact and model(batch(), torch.randn(4, model.noise_dim()).double()).kl.shape == (
        4,
        2,
    )


def test_decoding_a_vamp_topped_hierarchy_never_runs_the_encoder():
    """The top prior's density is wanted only when scoring codes: a VampPrior's is the encoder run
    on its K pseudo-inputs, which made each decode K images of bottom-up work (and so vae eval's
    memory estimate, measured on one decode, chose 12 samples at a time instead of thousands).
    Sampling runs it once, for the mixture's components."""
    from vaecli.evaluation import default_samples_at_once

    options = {"cells": "dense", "groups": "1,1", "latent": 2, "width": 8}
    spec = ModelSpec(input_shape=(1, 6, 6), latent_dim=0, model="hierarchical", prior="vamp",
                     prior_options={"k": 300}, model_options=options)  # fmt: skip
    model = build_model(spec).double()
    stem_rows: list[int] = []
    model.stem.register_forward_hook(lambda module, inputs, output: stem_rows.append(inputs[0].shape[0]))
    with torch.no_grad():
        model.decode(torch.randn(3, model.latent_dim, dtype=torch.float64))
        assert stem_rows == []
        model.sample_prior(3, torch.Generator().manual_seed(0))
        assert stem_rows == [300]
        model.log_prior(torch.randn(3, model.latent_dim, dtype=torch.float64))  # scoring runs it
    assert stem_rows == [300, 300]
    normal = build_model(ModelSpec(input_shape=(1, 6, 6), latent_dim=0, model="hierarchical",
                                   model_options=options))  # fmt: skip
    assert default_samples_at_once(model.float(), (1, 6, 6)) == default_samples_at_once(normal, (1, 6, 6))


def test_ancestral_samples_follow_each_groups_prior_and_its_temperature():
    model = tiny(groups="1,1", latent=1)
    z = model.sample_prior(20000, torch.Generator().manual_seed(0), [1.0, 0.5])
    top, below = z[:, 0], z[:, 1]
    assert abs(top.mean()) < 0.03 and abs(top.std() - 1) < 0.02  # N(0, 1)
    # Given each top value, the lower group is N(mu_p(z1), (0.5 sigma_p(z1))^2): standardised by the
    # prior's own parameters (read from the layers), it is N(0, 0.5^2).
    recorder = Recorder(model)
    with torch.no_grad():
        model.log_prior(z.double())
    out = recorder.prior[0]
    standard = (below.double() - out[:, 0]) / softplus_scale(out[:, 1])
    assert abs(standard.mean()) < 0.02 and abs(standard.std() - 0.5) < 0.02
    assert torch.equal(model.sample_prior(7, torch.Generator().manual_seed(4)),
                       model.sample_prior(7, torch.Generator().manual_seed(4)))  # fmt: skip


def test_decode_takes_the_top_groups_values_and_says_which_sizes_it_takes():
    from vaecli.errors import VaeError

    model = tiny(groups="1,1,1", latent=2)
    assert model.code_widths() == (2, 4, 6)
    z = model.sample_prior(3, torch.Generator().manual_seed(0), 1.0).double()
    assert model.decode(z[:, :2]).shape == (3, 1, 1, 6, 6)
    # The top group alone: the groups below at their prior means, which ancestral sampling at
    # temperature 0 also gives.
    means = model.sample_prior(3, torch.Generator().manual_seed(0), [1.0, 1e-12, 1e-12]).double()
    torch.testing.assert_close(model.decode(z[:, :2]), model.decode(means))
    with pytest.raises(VaeError, match="takes the top groups' values, 2, 4, 6 numbers"):
        model.decode(z[:, :3])


@pytest.mark.parametrize(
    ("shape", "likelihood", "sizes"),
    [((1, 28, 28), "bernoulli", [(7, 7), (7, 7), (14, 14), (14, 14)]),
     ((3, 32, 32), "categorical", [(8, 8), (8, 8), (16, 16), (16, 16)]),
     ((3, 27, 30), "gaussian", [(7, 8), (7, 8), (14, 15), (14, 15)])],
)  # fmt: skip
def test_conv_cells_fit_grey_and_colour_images_of_any_size(shape, likelihood, sizes):
    torch.manual_seed(0)
    spec = ModelSpec(input_shape=shape, latent_dim=0, model="hierarchical", likelihood=likelihood)
    model = build_model(spec)  # (the default: conv cells, groups 2,2, 4 latent maps each)
    assert model.group_sizes == sizes and model.latent_dim == sum(4 * h * w for h, w in sizes)
    images = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    x = model.likelihood.prepare(images, torch.Generator().manual_seed(0))
    terms = model(x, torch.randn(3, 2, model.noise_dim()), weights=True)
    assert terms.reconstruction.shape == (3, 2) and terms.kl.shape == (3, 4)
    assert torch.isfinite(terms.log_weight).all()
    params = model.decode(model.sample_prior(5, torch.Generator().manual_seed(1)))
    assert params.shape == (5, model.likelihood.params_per_pixel, *shape)


# --- the bound against numerical integration ------------------------------------------------


def log_marginal_by_integration(model: HierarchicalVAE, x: torch.Tensor, grid: int = 301) -> torch.Tensor:
    """log p(x) = log of the double integral over z1, z2 of p(z1) p(z2|z1) p(x|z1, z2), by the
    midpoint rule: first on [-8, 8]^2, then again on the box around where the integrand is
    within e^-40 of its largest value (the posterior is far narrower than the prior)."""
    results = []
    for image in x:
        box = (-8.0, 8.0, -8.0, 8.0)
        for _ in range(2):
            a, b, c, d = box
            z1 = torch.linspace(a, b, grid, dtype=torch.float64)
            z2 = torch.linspace(c, d, grid, dtype=torch.float64)
            codes = torch.cartesian_prod(z1, z2)
            with torch.no_grad():
                log_joint = torch.cat([
                    model.log_prior(part).sum(1)
                    + model.likelihood.log_prob(image.expand(part.shape[0], *image.shape), model.decode(part))
                    for part in codes.split(40000)
                ])  # fmt: skip
            cell = (z1[1] - z1[0]) * (z2[1] - z2[0])
            total = torch.logsumexp(log_joint, 0) + torch.log(cell)
            keep = codes[log_joint > log_joint.max() - 40]
            margin = 4 * torch.stack([z1[1] - z1[0], z2[1] - z2[0]])
            box = (*(keep[:, 0].min() - margin[0], keep[:, 0].max() + margin[0]),
                   *(keep[:, 1].min() - margin[1], keep[:, 1].max() + margin[1]))  # fmt: skip
            box = tuple(float(v) for v in box)
        results.append(total)
    return torch.stack(results)


def trained(mnist_root, out, options: dict[str, str], **settings):
    """The run folder of a dense hierarchy with ``options`` trained 2 epochs on real MNIST."""
    from vaecli.train import TrainConfig, train

    config = TrainConfig(
        data_dir=str(mnist_root), epochs=2, limit_test=300, model="hierarchical", device="cpu", out=str(out),
        model_options={"cells": "dense", "width": "32", **options}, **settings,
    )  # fmt: skip
    return train(config).run_dir


@pytest.fixture(scope="module")
def two_group_run(mnist_root, tmp_path_factory):
    """A 2-group model with 1-dimensional latents, trained a little on real MNIST."""
    out = tmp_path_factory.mktemp("hierarchy") / "two"
    return trained(mnist_root, out, {"groups": "1,1", "latent": "1"}, limit_train=3000)


def test_vae_eval_of_a_two_group_model_matches_numerical_integration(two_group_run, capsys, mnist_root,
                                                                     monkeypatch):  # fmt: skip
    from vaecli.datasets import mnist
    from vaecli.evaluation import TEST_PREPARE_SEED, prepare_fixed
    from vaecli.modelfile import load_model

    monkeypatch.setenv("VAECLI_DATA_DIR", str(mnist_root))
    code, out, err = run(capsys, "eval", str(two_group_run), "--k", "5000", "--limit", "4", "--json")
    assert code == 0, err
    report = json.loads(out)
    model, _ = load_model(two_group_run)
    model = model.double()
    images = mnist(mnist_root, "test").images[:4]
    x = prepare_fixed(model.likelihood, images, TEST_PREPARE_SEED).double()
    exact = log_marginal_by_integration(model, x)
    assert report["neg_log_px"] == pytest.approx(-exact.mean().item(), abs=0.1)
    assert report["neg_elbo"] > -exact.mean().item()  # the ELBO is a lower bound
    assert report["groups"] == {"z1": 1, "z2": 1}


# --- through every command -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hierarchy_run(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("hierarchy") / "three"
    options = {"groups": "2,1", "latent": "4"}
    return trained(mnist_root, out, options, limit_train=2000, ema=0.9, grad_clip=1e5, grad_skip=1e7)


def test_a_hierarchical_run_records_its_model_and_the_kl_of_each_group(hierarchy_run):
    from vaecli.config import load_config_file
    from vaecli.modelfile import load_model, read_header

    header = read_header(hierarchy_run / "model.safetensors")
    assert header["format_version"] == 5
    assert header["model"]["model"] == "hierarchical" and header["model"]["latent_dim"] == 12
    assert (
        header["model"]["model_options"]["groups"] == "2,1"
        and header["parts"]["model"]["distribution"] == "vaecli"
    )
    config = load_config_file(hierarchy_run / "config.yaml")
    assert config.model == "hierarchical" and config.model_options["latent"] == 4
    rows = [json.loads(line) for line in (hierarchy_run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        groups = [row[f"test_kl_z{i}"] for i in (1, 2, 3)]
        assert sum(groups) == pytest.approx(row["test_kl"]) and row["outlier_steps"] == 0
    model, _ = load_model(hierarchy_run)
    assert model.kl_groups() == {"z1": 4, "z2": 4, "z3": 4}
    # curves.png: the KL panel has a line per group, in the group's colour, and no other panel does
    import numpy as np
    from PIL import Image

    from vaecli.plots import PANEL_SIZE, group_colour

    picture = np.asarray(Image.open(hierarchy_run / "curves.png").convert("RGB"))
    width = PANEL_SIZE[0]
    for index in range(3):
        drawn = np.all(picture == np.array(group_colour(index)), axis=-1)
        assert drawn[:, 2 * width :].sum() > 20 and drawn[:, : 2 * width].sum() == 0, index


def test_every_command_works_with_a_hierarchical_model(hierarchy_run, in_tmp, capsys):

    tmp_path = in_tmp
    run_dir = str(hierarchy_run)
    code, out, err = run(capsys, "eval", run_dir, "--k", "50", "--limit", "100", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kl_per_dim"] is None and set(report["kl_per_group"]) == {"z1", "z2", "z3"}
    assert sum(report["kl_per_group"].values()) == pytest.approx(report["kl"])
    assert sum(report["active_per_group"].values()) == report["active_units"]
    code, out, err = run(capsys, "eval", run_dir, "--k", "10", "--limit", "20")
    assert code == 0 and "active units" in out and "z3" in out, err
    per_group = [
        ["sample", run_dir, "--n", "8", "--out", "s2.png", "--temperature", "1,0.7,0.5"],
        ["traverse", run_dir, "--out", "t2.png", "--steps", "5", "--group", "z2"],
    ]
    draw_pictures(capsys, tmp_path, run_dir, *per_group)
    encode_decode_by_group(capsys, tmp_path, run_dir)
    code, out, err = run(capsys, "export", run_dir, "exported")
    assert code == 0 and "matches the model" in err, err
    assert all((tmp_path / "exported" / f"{part}.onnx").is_file() for part in ("encoder", "decoder"))


def encode_decode_by_group(capsys, tmp_path: Path, run_dir: str) -> None:
    """``encode --group`` of a 3-group run into ``decode``: the top group's values as ``mu``, others
    by group in every format, each joined again by decode in the model's order."""
    import numpy as np
    from PIL import Image
    from safetensors import safe_open

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(folder / f"{i}.png")
    codes = {}
    for group in ("z1", "z2", "z3", "all"):
        code, out, err = run(capsys, "encode", run_dir, str(folder), "--group", group)
        assert code == 0, err
        codes[group] = [json.loads(line) for line in out.splitlines()]
        (tmp_path / f"{group}.jsonl").write_text(out)
    assert list(codes["z1"][0]) == ["path", "mu", "logvar"] and len(codes["z1"][0]["mu"]) == 4
    assert list(codes["z3"][0]) == ["path", "mu_z3", "logvar_z3"]
    names = ["path", *(f"{c}_z{g}" for c in ("mu", "logvar") for g in (1, 2, 3))]
    assert list(codes["all"][0]) == names
    for i, record in enumerate(codes["all"]):  # each group's numbers are what --group gives for it
        assert record["mu_z1"] == codes["z1"][i]["mu"] and record["logvar_z3"] == codes["z3"][i]["logvar_z3"]
        assert record["mu_z2"] == codes["z2"][i]["mu_z2"]
    grids = {}
    for format in ("jsonl", "csv", "npy", "safetensors"):
        target = str(tmp_path / f"all.{format}")
        if format != "jsonl":
            code, _, err = run(capsys, "encode", run_dir, str(folder), "--group", "all", "--out", target)
            assert code == 0, err
        code, _, err = run(capsys, "decode", run_dir, target, "--grid", f"{format}.png")
        assert code == 0, err
        grids[format] = np.asarray(Image.open(tmp_path / f"{format}.png"))
    assert all(np.array_equal(grids["jsonl"], grid) for grid in grids.values())
    assert (tmp_path / "all.csv").read_text().splitlines()[0].startswith("path,mu_z1_0,mu_z1_1,")
    assert np.load(tmp_path / "all.npy").dtype.names == tuple(names[1:])
    with safe_open(str(tmp_path / "all.safetensors"), "np") as f:
        assert f.metadata()["groups"] == "z1:4,z2:4,z3:4" and f.metadata()["group"] == "all"
        assert sorted(f.keys()) == sorted(names[1:]) and f.get_tensor("mu_z2").shape == (3, 4)
        written = np.array([r["mu_z2"] for r in codes["all"]], dtype=np.float32)  # 9 digits: exact
        assert np.array_equal(f.get_tensor("mu_z2"), written)
    code, _, err = run(capsys, "decode", run_dir, str(tmp_path / "z1.jsonl"), "--grid", "z1.png")
    assert code == 0, err
    code, _, err = run(capsys, "decode", run_dir, str(tmp_path / "z3.jsonl"), "--grid", "z3.png")
    assert code == 1 and "the codes hold z3 of this model's groups (z1, z2, z3)" in one_error_line(err)
    assert not (tmp_path / "z3.png").exists()


def test_codes_by_group_must_be_the_top_groups_and_one_form_or_the_other():
    from vaecli.codefiles import join_groups
    from vaecli.errors import VaeError

    groups = ("z1", "z2", "z3")
    assert join_groups(["path", "mu_z2", "mu_z1", "z_score"], groups, "f") == {"mu": ("mu_z1", "mu_z2")}
    assert join_groups(["mu", "logvar"], groups, "f") == {"mu": ("mu",), "logvar": ("logvar",)}
    with pytest.raises(VaeError, match="hold z1, z3 of this model's groups"):
        join_groups(["mu_z1", "mu_z3"], groups, "f")
    with pytest.raises(VaeError, match="'mu' is there both whole and by group"):
        join_groups(["mu", "mu_z1"], groups, "f")
    with pytest.raises(VaeError, match="do not all hold the same groups"):
        join_groups(["mu_z1", "mu_z2", "logvar_z1"], groups, "f")


def test_the_model_file_holds_the_moving_average_and_the_checkpoint_both(hierarchy_run):
    from safetensors.torch import load_file

    weights = load_file(str(hierarchy_run / "model.safetensors"))
    checkpoint = load_file(str(hierarchy_run / "checkpoint.safetensors"))
    name = "head.0.weight"
    assert torch.equal(weights[name], checkpoint[f"ema.{name}"])
    assert not torch.equal(weights[name], checkpoint[f"model.{name}"])


def test_vae_prior_of_a_vamp_topped_hierarchy_decodes_the_top_groups_components(mnist_root, tmp_path, capsys):
    """The components are the top group's posteriors of the pseudo-inputs; decoding a top-group
    code alone gives the groups below their prior means."""
    from test_pictures import cell, close, expected_pixels, pixels

    from vaecli.modelfile import load_model

    run_dir = trained(mnist_root, tmp_path / "vamp", {"groups": "1,1", "latent": "2"}, limit_train=1000,
                      prior="vamp", prior_options={"k": "4"})  # fmt: skip
    model, _ = load_model(run_dir, "cpu")
    out = tmp_path / "prior.png"
    code, _, err = run(capsys, "prior", str(run_dir), "--out", str(out))
    assert code == 0 and "the first 4 of the 4 components of the vamp prior" in err, err
    pseudo = model.prior.pseudo_inputs.detach()
    with torch.no_grad():
        top = model.encode_top(pseudo)[0]
        assert top.shape == (4, 2)
        decoded = expected_pixels(model, top)
    shown, grid = (pseudo[:, 0].clamp(0, 1) * 255).round().int().numpy(), pixels(out)
    for i in range(4):
        row, column = divmod(i, 2)
        assert close(cell(grid, row, 2 * column), shown[i])
        assert close(cell(grid, row, 2 * column + 1), decoded[i])


HIERARCHY_FLAGS = ["--model", "hierarchical", "--model-opt", "cells=dense", "--model-opt", "width=8"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (
            ["--model", "hierarchical", "--model-opt", "cells=round"],
            "option cells: unknown 'round' (use conv, dense)",
        ),
        (["--model", "hierarchical", "--model-opt", "groups=0"], "option groups wants positive integers"),
        (
            ["--model", "hierarchical", "--model-opt", "latent=0"],
            "option latent wants an integer of at least 1",
        ),
        (["--model", "hierarchical", "--model-opt", "scales=tanh"], "option scales: unknown 'tanh'"),
        (["--model", "hierarchical", "--model-opt", "depth=3"], "has no option 'depth'"),
        ([*HIERARCHY_FLAGS, "--model-opt", "posterior=nvae"], "option posterior: unknown 'nvae'"),
        (["--model", "hierarchical", "--arch", "conv"], "--arch is for --model vae"),
        (["--model", "hierarchical", "--latent-dim", "8"], "--latent-dim is for --model vae"),
        (["--grad-clip", "-1"], "--grad-clip must be a positive number, got -1.0"),
        (["--grad-skip", "0"], "--grad-skip must be a positive number, got 0.0"),
        (["--ema", "1"], "--ema must be from 0 (off) to below 1"),
        (["--weight-decay", "-0.1"], "--weight-decay must be 0 (off) or a positive number below 1 / lr"),
        (["--weight-decay", "nan"], "--weight-decay must be 0 (off) or a positive number below 1 / lr"),
        (["--lr", "0.1", "--weight-decay", "10"], "--weight-decay must be 0 (off) or a positive number"),
        (["--weight-decay", "x"], "Invalid value for '--weight-decay'"),
        ([*HIERARCHY_FLAGS, "--objective", "iwae", "--objective-opt", "dreg=true"], "has no DReG estimator"),
    ],
)
def test_bad_model_and_stabiliser_flags_are_one_line_and_write_nothing(argv, expected, capsys, tmp_path,
                                                                       monkeypatch, mnist_root):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAECLI_DATA_DIR", str(mnist_root))
    code, out, err = run(capsys, "train", "--epochs", "1", "--limit-train", "500", *argv)
    assert code == 2 and expected in one_error_line(err), err
    assert not Path("runs").exists()


def test_bad_group_and_temperature_flags_are_one_line(hierarchy_run, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, expected in (
        (
            ["sample", str(hierarchy_run), "--temperature", "1,2"],
            "2 temperatures for 3 latent groups (z1, z2, z3)",
        ),
        (
            ["sample", str(hierarchy_run), "--temperature", "1,x"],
            "--temperature wants a number or comma-separated",
        ),
        (["sample", str(hierarchy_run), "--temperature", "1,0,1"], "--temperature must be a positive number"),
        (["encode", str(hierarchy_run), ".", "--group", "z9"], "no group 'z9' (it has z1, z2, z3, or all)"),
        (["traverse", str(hierarchy_run), "--group", "z9"], "no group 'z9'"),
        (["traverse", str(hierarchy_run), "--group", "z1", "--dims", "4"], "no latent dimension 4"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and expected in one_error_line(err), (argv, err)
    codes = tmp_path / "bad.jsonl"
    codes.write_text(json.dumps({"mu": [0.0] * 5}) + "\n")
    code, out, err = run(capsys, "decode", str(hierarchy_run), str(codes), "--out", "d.png")
    assert code == 1 and "one of 4, 8, 12" in one_error_line(err), err


# --- the stabilisers --------------------------------------------------------------------------


def test_clipping_scales_the_gradients_down_to_the_norm_and_keeps_their_direction():
    from vaecli.training.stabilisers import GradientLimit

    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0.0, 4.0]), torch.full((2, 2), 6.0)
    before = torch.cat([p.grad.flatten() for p in params])
    within = GradientLimit(params, clip=2.0, skip=100.0).apply()
    after = torch.cat([p.grad.flatten() for p in params])
    assert bool(within) and after.norm().item() == pytest.approx(2.0, rel=1e-5)
    torch.testing.assert_close(after / after.norm(), before / before.norm())
    assert not bool(GradientLimit(params, clip=None, skip=1.0).apply())  # norm 2 > 1: skip
    assert GradientLimit(params, clip=None, skip=None).apply() is None


def _skipping_config(mnist_root, out, epochs: int = 1, grad_skip: float = 1e-9):
    from vaecli.train import TrainConfig

    return TrainConfig(
        data_dir=str(mnist_root), epochs=epochs, limit_train=1000, limit_test=100, batch_size=250,
        model="hierarchical", model_options={"cells": "dense", "groups": "1,1", "width": "16", "latent": "2"},
        grad_skip=grad_skip, device="cpu", out=str(out),
    )  # fmt: skip


def test_a_skip_threshold_below_every_norm_stops_the_run_after_its_first_epoch(mnist_root, tmp_path):
    from vaecli.errors import VaeError
    from vaecli.train import train

    with pytest.raises(VaeError) as caught:
        train(_skipping_config(mnist_root, tmp_path / "run"))
    assert str(caught.value).startswith(
        "every update of epoch 1 was skipped: the gradient's norm passed --grad-skip 1e-09 at all 4 steps"
    )
    assert not (tmp_path / "run").exists()  # nothing learned, nothing kept


class DivergesAt:
    """From epoch ``epoch`` on, every gradient passes the skip threshold, as a diverged model's do."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.run = epoch, None

    def on_train_start(self, run) -> None:
        self.run = run

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == self.epoch:
            self.run.limit.skip = 1e-9


def test_a_run_whose_every_update_is_skipped_stops_and_keeps_the_epochs_before(mnist_root, tmp_path):
    """A diverged model's gradients all pass --grad-skip: the run would go on for its remaining
    epochs without changing a weight. It stops at the end of the first such epoch instead."""
    from vaecli.errors import VaeError
    from vaecli.modelfile import load_model
    from vaecli.train import train

    with pytest.raises(VaeError, match="every update of epoch 2 was skipped"):
        train(_skipping_config(mnist_root, tmp_path / "run", epochs=4, grad_skip=1e7), DivergesAt(2))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1] and rows[0]["outlier_steps"] == 0
    load_model(tmp_path / "run")  # epoch 1's model file is whole


def test_the_outlier_check_counts_only_an_epoch_of_nothing_but_outliers():
    from vaecli.errors import VaeError
    from vaecli.training.stabilisers import GradientLimit

    limit = GradientLimit([], clip=None, skip=10.0)
    limit.check_epoch(3, outliers=156, steps=157)  # one update applied: it still learns
    with pytest.raises(VaeError, match="every update of epoch 3 was skipped"):
        limit.check_epoch(3, outliers=157, steps=157)
    GradientLimit([], clip=1.0, skip=None).check_epoch(3, outliers=0, steps=157)  # no skipping at all
    with pytest.raises(VaeError, match="at 100 of its 157 steps and the others were non-finite"):
        limit.check_epoch(3, outliers=100, steps=157, non_finite=57)  # (--on-nan skip took the rest)
    limit.check_epoch(3, outliers=100, steps=157, non_finite=56)


@pytest.mark.parametrize("foreach", [False, True], ids=["per-tensor", "foreach"])
def test_the_moving_average_follows_the_applied_updates_with_its_decay(foreach):
    from vaecli.training.stabilisers import WeightAverage

    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer, decay=0.5)
    if foreach:  # (the kernels CUDA uses, run here on the CPU)
        average.scratch = [torch.empty_like(p) for p in average.average]
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update(torch.tensor(False))  # the optimiser skipped it: nothing moves
    torch.testing.assert_close(average.average[0], start)
    assert average.updates == 0
    average.update()  # update 0: decay min(0.5, 1/10) = 0.1
    first = 0.1 * start + 0.9 * (start + 1.0)
    torch.testing.assert_close(average.average[0], first)
    with average.swapped_in():
        torch.testing.assert_close(layer.weight, first)
    torch.testing.assert_close(layer.weight, start + 1.0)
    average.update(torch.tensor(True))  # update 1: decay min(0.5, 2/11)
    torch.testing.assert_close(average.average[0], 2 / 11 * first + 9 / 11 * (start + 1.0))
    assert average.updates == 2


class SkipsFrom:
    """From step ``step`` of epoch ``epoch`` on, every gradient passes the skip threshold."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at, self.epoch, self.run = (epoch, step), 0, None

    def on_train_start(self, run) -> None:
        self.run = run

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int) -> None:
        if (self.epoch, step + 1) == self.at:
            self.run.limit.skip = 1e-9


def test_a_run_averages_only_the_updates_it_applied(mnist_root, tmp_path):
    from vaecli.checkpoint import checkpoint_header
    from vaecli.train import train

    config = _skipping_config(mnist_root, tmp_path / "run", epochs=2, grad_skip=1e7)
    config.ema = 0.9
    train(config, SkipsFrom(2, 3))  # epoch 2's steps 3 and 4 are skipped
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["outlier_steps"] for row in rows] == [0, 2]
    assert checkpoint_header(tmp_path / "run" / "checkpoint.safetensors")["extra"]["ema_updates"] == 6


@pytest.mark.slow
def test_a_hierarchical_run_with_stabilisers_resumes_to_the_same_weights(mnist_root, tmp_path):
    from test_objectives import same_weights
    from test_runs import SignalAt

    from vaecli.train import TrainConfig, TrainingInterrupted, train

    def config(out):
        return TrainConfig(
            data_dir=str(mnist_root), epochs=2, limit_train=1200, limit_test=200, model="hierarchical",
            model_options={"cells": "dense", "groups": "1,1", "width": "16"}, ema=0.99, grad_clip=50.0,
            grad_skip=1e6, device="cpu", out=str(out),
        )  # fmt: skip

    train(config(tmp_path / "straight"))
    with pytest.raises(TrainingInterrupted):
        train(config(tmp_path / "run"), SignalAt(2, 2))
    train(config(tmp_path / "run"), resume=True)
    assert same_weights(tmp_path / "straight", tmp_path / "run")  # (the model files: the averages)


@pytest.mark.slow
def test_a_hierarchical_run_compiled_matches_eager(mnist_root, tmp_path):
    """(Conv cells: the compiled graph then holds convolutions, upsampling and crops too.)"""
    from test_distributed import small

    from vaecli.train import train

    options = {"model": "hierarchical", "model_options": {"cells": "conv", "groups": "1,1", "width": "8"},
               "epochs": 1, "limit_train": 600, "latent_dim": 32, "arch_options": {}}  # fmt: skip
    eager = train(small(mnist_root, tmp_path / "eager", **options)).metrics
    compiled = train(small(mnist_root, tmp_path / "compiled", compile=True, **options)).metrics
    for key in ("train_neg_elbo", "test_neg_elbo", "test_kl", "test_kl_z2"):
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=1e-3)


@pytest.mark.slow
def test_a_hierarchical_run_in_two_torchrun_processes_equals_one_process(mnist_root, tmp_path):
    import sys

    from test_distributed import TORCHRUN, assert_close_weights
    from test_distributed import run as run_process

    train = ["train", "--epochs", "2", "--limit-train", "1000", "--limit-test", "200", "--batch-size", "33",
             "--device", "cpu", "--quiet", "--ema", "0.9", *HIERARCHY_FLAGS,
             "--model-opt", "groups=1,1"]  # fmt: skip
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    done = run_process([sys.executable, "-m", "vaecli", *train, "--out", str(single)], mnist_root)
    assert done.returncode == 0, done.stderr
    done = run_process([*TORCHRUN, "-m", "vaecli", *train, "--out", str(ddp)], mnist_root)
    assert done.returncode == 0, done.stderr
    assert_close_weights(ddp, single)
