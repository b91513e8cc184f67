"""The `vae` command: in-process and as the installed console script; bad input."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors

from vaecli.cli import main

VAE = str(Path(sys.executable).parent / "vae")
TINY = [
    "--epochs",
    "1",
    "--limit-train",
    "1000",
    "--limit-test",
    "200",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def draw_pictures(capsys, folder, run_dir: str, *extra: list[str]) -> None:
    """vae sample, traverse, map, reconstruct and interpolate on ``run_dir`` (plus the ``extra``
    command lines), each writing a non-empty file into ``folder``, the working directory."""
    for argv in (
        ["sample", run_dir, "--n", "8", "--out", "s.png"],
        ["traverse", run_dir, "--out", "t.png", "--steps", "5"],
        ["map", run_dir, "--out", "m.png"],
        ["reconstruct", run_dir, "--out", "r.png"],
        ["interpolate", run_dir, "3", "7", "--out", "i.png"],
        *extra,
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0, (argv, err)
        assert (folder / argv[argv.index("--out") + 1]).stat().st_size > 0


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_train_then_sample_in_process(in_tmp, capsys):
    code, out, err = run(capsys, "train", *TINY, "--device", "cpu")
    assert code == 0, err
    run_dir = Path(out.strip())
    assert run_dir == Path("runs/mnist-bernoulli-mlp")
    assert "test -ELBO" in err and "img/s" in err  # the epoch rows go to stderr
    code, out, err = run(capsys, "train", *TINY, "--quiet")
    assert code == 0 and out.strip() == "runs/mnist-bernoulli-mlp-2" and err == ""

    code, out, err = run(capsys, "sample", str(run_dir), "--n", "10", "--out", "g.png", "--nrow", "5")
    assert code == 0, err
    assert out == ""
    picture = Image.open("g.png")
    assert picture.size == (5 * 30 + 2, 2 * 30 + 2)  # 28-pixel images with 2-pixel padding


def test_sample_is_reproducible_and_has_modes(small_run, tmp_path, capsys):
    paths = {}
    for name, args in {
        "a": ["--seed", "1"],
        "b": ["--seed", "1"],
        "c": ["--seed", "2"],
        "d": ["--seed", "1", "--mode", "sample"],
    }.items():
        paths[name] = tmp_path / f"{name}.png"
        code, _, err = run(capsys, "sample", str(small_run), "--n", "16", "--out", str(paths[name]), *args)
        assert code == 0, err
    data = {k: p.read_bytes() for k, p in paths.items()}
    assert data["a"] == data["b"] and data["a"] != data["c"] and data["a"] != data["d"]
    drawn = set(np.asarray(Image.open(paths["d"])).ravel().tolist())
    assert drawn <= {0, 255}  # drawn Bernoulli pixels are black or white
    assert len(np.unique(np.asarray(Image.open(paths["a"])))) > 2  # means are grey levels


def test_sample_as_safetensors(small_run, tmp_path, capsys):
    out = tmp_path / "s.safetensors"
    code, _, err = run(
        capsys,
        "sample",
        str(small_run / "model.safetensors"),
        "--n",
        "7",
        "--format",
        "safetensors",
        "--out",
        str(out),
    )
    assert code == 0, err
    tensors = load_safetensors(out.read_bytes())
    assert tensors["z"].shape == (7, 8) and tensors["images"].shape == (7, 1, 28, 28)
    assert 0 <= tensors["images"].min() and tensors["images"].max() <= 1
    # The images are the decoder's probabilities for those z.
    from vaecli.modelfile import load_model

    model, _ = load_model(small_run)
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(tensors["z"]))[:, 0]
    torch.testing.assert_close(tensors["images"], expected)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["train", "--data", "cifar99"], 2, "unknown dataset 'cifar99'"),
        (["train", "--likelihood", "poisson"], 2, "unknown likelihood 'poisson'"),
        (["train", "--arch", "transformer"], 2, "unknown architecture 'transformer'"),
        (["train", "--device", "tpu"], 2, "unknown device 'tpu'"),
        (["train", "--device", "cuda:7"], 1, "cuda"),
        (["train", "--epochs", "-1"], 2, "--epochs must be at least 1"),
        (["train", "--batch-size", "0"], 2, "--batch-size"),
        (["train", "--lr", "nan"], 2, "--lr"),
        (["train", "--epochs", "two"], 2, "Invalid value for '--epochs'"),
        (["train", "--arch-opt", "hidden"], 2, "KEY=VALUE"),
        (["train", "--hidden", "12,x"], 2, "integers"),
        (["train", "--arch-opt", "depth=3"], 2, "no option 'depth'"),
        (["train", "--lr-schedule", "step"], 2, "--lr-schedule"),
        (["train", "--bogus"], 2, "No such option"),
        (
            ["train", "--likelihood", "bernoulli", "--sigma", "0.1"],
            2,
            "likelihood 'bernoulli' (vaecli 0.1.0) has no option 'sigma'",
        ),  # fmt: skip
        (["train", "--sigma", "0.1", "--bins", "8"], 2, "sigma is gaussian's and bins is categorical's"),
        (["train", "--likelihood", "categorical", "--bins", "1"], 2, "bins must be from 2 to 256"),
        (["train", "--likelihood", "categorical", "--bins", "300"], 2, "bins must be from 2 to 256"),
        (["train", "--likelihood", "gaussian", "--sigma", "-2"], 2, "sigma must be positive"),
        (["train", "--likelihood", "gaussian", "--sigma", "0.1", "--bins", "8"], 2, "no option 'bins'"),
        (["train", "--likelihood-opt", "sigma"], 2, "KEY=VALUE"),
        (["sample", "missing-run"], 1, "no model at missing-run"),
        (["sample"], 2, "Missing argument"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(in_tmp, capsys, argv, code, message):
    got, out, err = run(capsys, *argv)
    assert got == code, err
    assert message in one_error_line(err)
    assert out == ""
    assert list(in_tmp.iterdir()) == []


def test_bad_sample_options(small_run, in_tmp, capsys):
    for argv, code, message in [
        (["--mode", "mode"], 2, "has no mode 'mode' (it has: mean, sample)"),
        (["--n", "0"], 2, "--n must be at least 1"),
        (["--format", "gif"], 2, "unknown --format 'gif'"),
        (["--nrow", "0"], 2, "--nrow"),
    ]:
        got, _, err = run(capsys, "sample", str(small_run), *argv)
        assert got == code and message in one_error_line(err)
    assert list(in_tmp.iterdir()) == []
    Path("taken.png").write_bytes(b"mine")
    got, _, err = run(capsys, "sample", str(small_run), "--out", "taken.png")
    assert got == 1 and "--force" in one_error_line(err)
    assert Path("taken.png").read_bytes() == b"mine"
    Path("notamodel.safetensors").write_text("hello")
    got, _, err = run(capsys, "sample", "notamodel.safetensors")
    assert got == 1 and "not a safetensors model file" in one_error_line(err)


def test_existing_run_needs_force(in_tmp, capsys):
    run_dir = in_tmp / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("keep: me\n")
    got, _, err = run(capsys, "train", *TINY, "--out", str(run_dir))
    assert got == 1 and "--force" in one_error_line(err)
    assert [p.name for p in run_dir.iterdir()] == ["config.yaml"]
    got, out, err = run(capsys, "train", *TINY, "--out", str(run_dir), "--force", "-q")
    assert got == 0, err
    assert (run_dir / "model.safetensors").is_file()
    # --force never deletes a folder that is not a run.
    other = in_tmp / "home"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    got, _, err = run(capsys, "train", *TINY, "--out", str(other), "--force")
    assert got == 1 and "not a vaecli run" in one_error_line(err)
    assert (other / "thesis.tex").read_text() == "precious"


def test_missing_data_without_network(tmp_path, monkeypatch, capsys, no_network_mnist):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAECLI_DATA_DIR", str(tmp_path / "data"))
    got, out, err = run(capsys, "train", "--epochs", "1")
    assert got == 1
    line = one_error_line(err)
    assert "MNIST is not in" in line and "could not be downloaded" in line
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(in_tmp, capsys):
    got, _, err = run(capsys, "--debug", "sample", "missing-run")
    assert got == 1 and "Traceback" in err
    os.environ.pop("VAECLI_DEBUG", None)


@pytest.mark.slow
def test_installed_console_script_end_to_end(tmp_path, mnist_root):
    env = {**os.environ, "VAECLI_DATA_DIR": str(mnist_root)}
    trained = subprocess.run(
        [VAE, "train", *TINY, "--out", "run"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip() == "run"
    sampled = subprocess.run(
        [sys.executable, "-m", "vaecli", "sample", "run", "--n", "4", "--out", "-"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith(b"\x89PNG")
    bad = subprocess.run(
        [VAE, "train", "--likelihood", "poisson"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "poisson" in bad.stderr


@pytest.mark.slow
def test_categorical_and_gaussian_models_sample_in_their_modes(in_tmp, capsys):
    code, _, err = run(
        capsys, "train", *TINY, "--likelihood", "categorical", "--bins", "16", "--out", "cat", "-q"
    )
    assert code == 0, err
    pictures = {}
    for mode in ("mean", "mode", "sample"):
        code, _, err = run(capsys, "sample", "cat", "--mode", mode, "--n", "9", "--out", f"{mode}.png")
        assert code == 0, err
        pictures[mode] = np.asarray(Image.open(f"{mode}.png")).astype(int)
    levels = np.round(np.arange(16) * 255 / 15)
    assert np.isin(pictures["mode"], levels).all() and np.isin(pictures["sample"], levels).all()
    assert not np.isin(pictures["mean"], levels).all()  # expected values fall between the levels
    code, _, err = run(capsys, "train", *TINY, "--likelihood", "gaussian", "--out", "gauss", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "sample", "gauss", "--mode", "mode", "--out", "x.png")
    assert code == 2 and "has no mode 'mode' (it has: mean, sample)" in one_error_line(err)


def test_cli_module_does_not_import_torch():
    """`vae --help` and usage errors stay fast: torch loads only when a command does work."""
    code = "import sys, vaecli.cli; from vaecli.config import TrainConfig; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_tab_completion_of_commands_and_options():
    """The protocol the script from `vae --install-completion` speaks, run against the real `vae`."""
    vae = str(Path(sys.executable).parent / "vae")

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_VAE_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}  # fmt: skip
        result = subprocess.run([vae], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("vae tr") == ["train", "traverse"]
    assert complete("vae train --latent") == ["--latent-dim"]
    script = subprocess.run([vae, "--show-completion", "bash"], capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "complete" in script.stdout and "_VAE_COMPLETE" in script.stdout


def test_help_is_what_a_shell_user_expects(capsys, monkeypatch):
    """No `<bool>` on flags, arguments in capitals (not `{model}`) in the usage line, values named,
    and a box of at most 80 columns however wide the terminal."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    for command in ("sample", "encode", "interpolate", "train"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out and "<str>" not in out and "{" not in out.splitlines()[1]
        assert max(len(line) for line in out.splitlines()) <= 80
    assert "Usage: vae train [OPTIONS]" in out
    assert main(["interpolate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: vae interpolate [OPTIONS] MODEL_OR_RUN A B" in out
    assert main(["encode", "--help"]) == 0
    out = capsys.readouterr().out
    assert "MODEL_OR_RUN [PATH]..." in out and "--batch-size" in out and " N " in out
