"""Hostile and careless input: alias bombs, counts with no ceiling, hostile model headers, paths
on stdin, full and read-only disks, long names, stale temporaries, signals, and values that used
to reach the user as internal errors. Each answer is one line, the right exit code, bounded
memory, and no file lost or half-written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaecli import fileio
from vaecli.cli import main
from vaecli.modelfile import FORMAT

VAE = str(Path(sys.executable).parent / "vae")
TINY = ["--epochs", "1", "--limit-train", "500", "--limit-test", "100", "--latent-dim", "2", "--hidden", "16"]


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("vae: warning")]
    assert len(lines) == 1, lines
    return lines[0]


# --- config files ------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB + "data_options: {download: *i}\n", "expands to more than 100000 values"),
        (BOMB + "out: *i\n", "expands to more than 100000 values"),
        ("epochs: 2\nepochs: 3\n", "key 'epochs' appears twice (again at line 2)"),
        ("arch_options: " + "[" * 200 + "]" * 200 + "\n", "nested too deeply"),
        ("arch_options: {hidden: [[512]]}\n", "option hidden wants comma-separated integers"),
        ("seed: 1180591620717411303424\n", "key 'seed' must be from 0 to"),
    ],
)
def test_a_hostile_config_file_fails_at_once_in_one_line(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    started = time.perf_counter()
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert time.perf_counter() - started < 30  # (before: minutes and gigabytes)
    line = one_error(capsys)
    assert message in line, line
    assert str(config) in line or "architecture 'mlp' (vaecli" in line, line  # the file, or the part
    assert not (tmp_path / "r").exists()


def test_config_files_that_are_not_text_or_not_there(tmp_path, capsys):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"epochs: \xff\xfe\n")
    assert main(["train", "--config", str(binary)]) == 2
    assert "not UTF-8 text" in one_error(capsys)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (1 << 20) + "\n")
    assert main(["train", "--config", str(huge)]) == 2
    assert "larger than 1024 KiB" in one_error(capsys)
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read config file" in one_error(capsys)


def test_force_in_a_config_file_never_replaces_a_run(small_run, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"force: true\nepochs: 1\nout: {small_run}\n")
    before = (small_run / "model.safetensors").read_bytes()
    assert main(["train", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "'force: true' ignored" in err and "already exists; pass --force" in err
    assert (small_run / "model.safetensors").read_bytes() == before


# --- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "{run}", "--n", "1000000", "--out", "-", "--format", "safetensors"], "GiB of samples"),
        (["sample", "{run}", "--n", "1000000000", "--out", "{tmp}/s.png"], "GiB of samples"),
        (["sample", "{run}", "--n", "200000", "--out", "{tmp}/s.png"], "a grid holds at most about 74565"),
        (["interpolate", "{run}", "0", "1", "--steps", "100000", "--out", "{tmp}/i.png"], "too large"),
        (["traverse", "{run}", "--steps", "10000000", "--out", "{tmp}/t.png"], "too large"),
        (["reconstruct", "{run}", "--n", "10000000", "--out", "{tmp}/r.png"], "too large"),
        (["sample", "{run}", "--seed", "1180591620717411303424", "--out", "{tmp}/s.png"], "--seed"),
        (["eval", "{run}", "--seed", "-1"], "--seed"),
        (["encode", "{run}", "x.png", "--seed", "99999999999999999999"], "--seed"),
        (["traverse", "{run}", "--steps", "1000000000", "--out", "{tmp}/t.png"], "too large"),  # (was 8 GB)
        (["traverse", "{run}", "--range", "1e308", "--out", "{tmp}/t.png"], "--range must be at most"),
        (["train", "--free-bits", "1e308", "--out", "{tmp}/r"], "option free_bits must be at most"),
        (["train", "--latent-dim", "1" + "0" * 20, "--out", "{tmp}/r"], "--latent-dim must be at most"),
        (["train", "--batch-size", "1" + "0" * 20, "--out", "{tmp}/r"], "--batch-size must be at most"),
        (["train", "--iw-samples", "99999999999999999999", "--out", "{tmp}/r"], "option k must be at most"),
        (["train", "--nproc", "1000000000", "--out", "{tmp}/r"], "--nproc must be at most 1024"),
        (["encode", "{run}", "x.png", "--workers", "1000000000"], "--workers must be at most 1024"),
        (["eval", "{run}", "--k", "1000000000"], "--k must be at most 1048576"),
    ],
)
def test_counts_without_a_ceiling_are_refused_before_any_work(small_run, tmp_path, capsys, argv, message):
    argv = [a.format(run=small_run, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert message in one_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_name_the_system_refuses_is_one_line(small_run, tmp_path, capsys):
    too_long = tmp_path / ("x" * 300 + ".png")
    assert main(["sample", str(small_run), "--out", str(too_long)]) == 1
    assert one_error(capsys) == f"vae: error: {too_long}: File name too long"


def test_a_huge_model_is_refused_in_the_users_terms(mnist_root, tmp_path, capsys):
    assert main(["train", *TINY[:-2], "--hidden", "1000000000", "--out", str(tmp_path / "r")]) == 1
    line = one_error(capsys)
    assert "cannot be built with these sizes: not enough memory" in line and "GiB" in line
    conv = ["--arch", "conv", "--arch-opt", "hidden=-1"]
    assert main(["train", *TINY[:-2], *conv, "--out", str(tmp_path / "r")]) == 2
    assert "option hidden wants an integer of at least 1, got '-1'" in one_error(capsys)
    assert main(["train", *TINY[:-1], "512,,256", "--out", str(tmp_path / "r")]) == 2
    assert "option hidden wants comma-separated integers, got '512,,256'" in one_error(capsys)
    assert main(["train", *TINY, "--data-opt", "download=maybe", "--out", str(tmp_path / "r")]) == 2
    assert "option download wants true or false, got 'maybe'" in one_error(capsys)
    assert not (tmp_path / "r").exists()


# --- model headers -----------------------------------------------------------------------------


def _rewrite(model: Path, path: Path, change) -> Path:
    with safe_open(str(model), framework="pt") as f:
        metadata = f.metadata()
    header = json.loads(metadata[FORMAT])
    change(header)
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(load_file(str(model)), str(path), metadata={**metadata, FORMAT: text})
    return path


def test_a_hostile_header_cannot_make_eval_read_images_at_its_size(small_run, tmp_path, capsys, monkeypatch):
    from vaecli import imagefiles

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.png").write_bytes(b"")
    reads = []
    monkeypatch.setattr(imagefiles, "read_image", lambda *a, **k: reads.append(a))

    def hostile(header):
        header["data"] = {**header["data"], "name": "folder",
                          "options": {"path": str(folder), "size": "20000x20000"}}  # fmt: skip
        header["parts"]["dataset"]["name"] = "folder"

    model = _rewrite(small_run / "model.safetensors", tmp_path / "m.safetensors", hostile)
    assert main(["eval", str(model), "--k", "2"]) == 1
    assert "has images of shape (1, 20000, 20000)" in one_error(capsys) and reads == []
    wrong_shape = _rewrite(small_run / "model.safetensors", tmp_path / "w.safetensors",
                           lambda h: h["data"].update(shape=[3, 64, 64]))  # fmt: skip
    assert main(["eval", str(wrong_shape), "--k", "2"]) == 1
    assert "its data section says images of shape [3, 64, 64]" in one_error(capsys)


def test_deeply_nested_json_is_a_damaged_file_not_a_recursion_error(small_run, tmp_path, capsys):
    nested = _rewrite(small_run / "model.safetensors", tmp_path / "n.safetensors",
                      lambda h: h.update(extra=json.loads("[" * 900 + "]" * 900)))  # fmt: skip
    deep = "[" * 200_000 + "]" * 200_000
    with safe_open(str(nested), framework="pt") as f:
        metadata = f.metadata()
    save_file(load_file(str(nested)), str(nested), metadata={**metadata, FORMAT: deep})
    assert main(["sample", str(nested), "--out", str(tmp_path / "s.png")]) == 1
    assert "damaged vaecli header (nested too deeply)" in one_error(capsys)
    codes = tmp_path / "codes.jsonl"
    codes.write_text(deep + "\n")
    assert main(["decode", str(small_run), str(codes), "--out", str(tmp_path / "o")]) == 1
    assert "nested too deeply" in capsys.readouterr().err


# --- paths on stdin ------------------------------------------------------------------------------


def test_find_print0_into_encode_gives_each_image_once(small_run, tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for sub in ("a", "a/b", "c"):
        (root / sub).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (28, 28), 40 * i).save(root / sub / f"{i}.png")
    listing = subprocess.run(["find", str(root), "-print0"], capture_output=True, check=True).stdout
    result = subprocess.run([VAE, "encode", str(small_run), "-0"], input=listing, capture_output=True)
    assert result.returncode == 0, result.stderr
    paths = [json.loads(line)["path"] for line in result.stdout.decode().splitlines()]
    assert sorted(paths) == sorted(str(p) for p in root.rglob("*.png")) and len(paths) == 6
    assert b"skipped 4 folders listed on stdin" in result.stderr


# --- writing files -------------------------------------------------------------------------------


def test_an_unwritable_output_is_one_line_naming_the_final_path(small_run, tmp_path, capsys, monkeypatch):
    real_open = os.open

    def read_only(path, flags, mode=0o777, **kw):
        if str(path).endswith(fileio.TEMP_SUFFIX):
            raise OSError(30, "Read-only file system")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(fileio.os, "open", read_only)
    for argv, out in (
        (["sample", str(small_run), "--out", str(tmp_path / "s.png")], tmp_path / "s.png"),
        (["traverse", str(small_run), "--dims", "0", "--out", str(tmp_path / "t.png")], tmp_path / "t.png"),
        (["train", *TINY, "--out", str(tmp_path / "run")], tmp_path / "run" / "config.yaml"),
    ):
        assert main(argv) == 1
        assert one_error(capsys) == f"vae: error: cannot write {out}: Read-only file system"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_model_save_on_a_full_disk_leaves_a_resumable_run(mnist_root, tmp_path, monkeypatch):
    import vaecli.modelfile
    from vaecli.errors import VaeError
    from vaecli.train import TrainConfig, train

    real = vaecli.modelfile.write_bytes_atomic
    calls = []

    def full_on_second(path, data, sync=True):
        calls.append(path)
        if len(calls) == 2:
            with fileio.atomic_path(path) as tmp:
                tmp.write_bytes(data[:100])
                raise OSError(28, "No space left on device")
        real(path, data, sync)

    monkeypatch.setattr(vaecli.modelfile, "write_bytes_atomic", full_on_second)
    out = tmp_path / "run"
    config = TrainConfig(data_dir=str(mnist_root), epochs=3, limit_train=500, limit_test=100, latent_dim=2,
                         arch_options={"hidden": "16"}, out=str(out))  # fmt: skip
    with pytest.raises(VaeError, match="cannot write .*model.safetensors: No space left"):
        train(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]  # no row for the epoch whose model was not saved
    monkeypatch.undo()
    for legacy in (".tmpAbC123", ".model.safetensors.k2j4h5g6.tmp"):  # an older vaecli's, killed
        (out / legacy).write_bytes(b"partial")
    resumed = train(config, resume=True)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3]
    assert not list(out.rglob("*.tmp"))


def test_long_names_permissions_and_stale_temporaries(small_run, tmp_path, capsys):
    long_name = "x" * 251 + ".png"  # 255 bytes: the longest name a Linux folder takes
    assert main(["sample", str(small_run), "--n", "4", "--out", str(tmp_path / long_name)]) == 0
    assert (tmp_path / long_name).is_file()
    assert oct((small_run / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert oct((small_run / "checkpoint.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    host = fileio._HOST
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{fileio.TEMP_PREFIX}{host}-{dead.pid}-0000.tmp"
    live = tmp_path / f"{fileio.TEMP_PREFIX}{host}-{os.getppid()}-0000.tmp"
    other_host = tmp_path / f"{fileio.TEMP_PREFIX}zzzzzz-{dead.pid}-0000.tmp"
    for path in (stale, live, other_host):
        path.write_bytes(b"partial")
    fileio._swept.discard(tmp_path.resolve())
    assert main(["sample", str(small_run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert not stale.exists() and live.exists() and other_host.exists()
    assert socket.gethostname()  # (the host hash is of this name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- signals -------------------------------------------------------------------------------------


def test_a_second_signal_stops_at_once_with_its_own_exit_code():
    from vaecli.errors import Stopped
    from vaecli.training.interrupts import InterruptFlag

    with InterruptFlag() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # (the handler runs between bytecodes)
        assert flag.signum == signal.SIGTERM
        with pytest.raises(Stopped, match="SIGTERM again: stopped at once") as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    assert info.value.exit_code == 143


def test_ctrl_c_in_encode_is_one_line_and_leaves_no_temporary(small_run, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3000):
        Image.new("L", (28, 28), i % 256).save(folder / f"{i}.png")
    out = tmp_path / "codes.jsonl"
    argv = [VAE, "encode", str(small_run), str(folder), "--workers", "2", "--batch-size", "16", "-o", out]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".*.tmp")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # until encode is writing its output
    os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the whole process group
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("encode finished before the signal")
    assert process.returncode == 130 and err.strip().splitlines() == ["vae: interrupted"], err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


# --- small ones ----------------------------------------------------------------------------------


def test_small_ones(small_run, tmp_path, capsys, monkeypatch):
    assert main([]) == 2
    assert "error" not in capsys.readouterr().err
    assert main(["interpolate", str(small_run), "missing.png", "0", "--out", str(tmp_path / "i.png")]) == 1
    assert "A: no such image file: missing.png" in one_error(capsys)
    for argv in (["--grid", str(tmp_path / "g.png")], ["--out", str(tmp_path / "o")]):
        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        assert main(["decode", str(small_run), str(empty), *argv]) == 1
        line = one_error(capsys)
        assert "no codes in" in line and "nothing was written" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "empty.jsonl"]
    assert main(["plot", str(small_run / "model.safetensors"), "--out", str(tmp_path / "p.png")]) == 0
    assert main(["map", str(small_run), "--n", "1", "--out", str(tmp_path / "m.png")]) == 0
