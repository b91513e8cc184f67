"""Probe every command with bad input, as a hostile or careless user would, and count how each
case ended: clean (one line on stderr, exit 0/1/2/130/143), internal errors (an exception's name
reaching the user), tracebacks, time-outs, files lost (a file that was there before, changed or
gone without --force; a temporary left behind), and the peak memory of the worst case.

Needs root for the full-disk and read-only cases (small tmpfs mounts); without it they are
skipped. Takes about 30 minutes on 2 cores (each case starts a fresh ``vae``).

    VAECLI_DATA_DIR=../shared/data .venv/bin/python bench/hostile.py [--quick] [--log FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from vaecli.cli import app

VAE = str(Path(sys.executable).parent / "vae")
TIMEOUT = 90
INTERNAL = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")  # an exception's name reaching the user
BAD_INTS = ["-1", "0", "1000000000", "abc", "1.5", "99999999999999999999999"]
BAD_FLOATS = ["-1", "0", "nan", "inf", "1e308", "abc"]
BAD_TEXTS = ["", "/", "{dir}", "{missing}", "x" * 300, "{binary}"]
BAD_CONFIGS = {
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    + "data_options: {download: *i}\n",
    "deep": "arch_options: " + "[" * 5000 + "]" * 5000 + "\n",
    "duplicate": "epochs: 1\nepochs: 2\n",
    "force": "force: true\nepochs: 1\nlimit_train: 300\nlimit_test: 100\n",
    "nested list": "arch_options: {hidden: [[512]]}\n",
    "wrong type": "epochs: many\n",
}


@dataclass
class Outcome:
    name: str
    code: int | None
    stderr: str
    peak_mb: float
    lost: list[str]

    @property
    def kind(self) -> str:
        # (train's progress rows are on stderr too: only vae's own message lines count)
        lines = self.stderr.splitlines()
        said = [line for line in lines if line.startswith("vae") and " warning: " not in line]
        if self.code is None:
            return "timeout"
        if "Traceback" in self.stderr:
            return "traceback"
        internal = any(INTERNAL.search(line) for line in said)
        expected = (0, 1, 2, 130, 143, 137) if "SIGKILL" in self.name else (0, 1, 2, 130, 143)
        if internal or self.code not in expected or len(said) > 1:
            return "internal"
        return "clean"


def run_case(name: str, argv: list[str], cwd: Path, guarded: list[Path], stdin: bytes = b"",
             signals: tuple[float, list[int]] | None = None) -> Outcome:  # fmt: skip
    """Run ``vae ARGV`` in ``cwd`` (``signals``: after that many seconds, send these to it); report
    its exit, stderr, peak memory (its own rusage) and which guarded files it changed."""
    before = {p: _digest(p) for p in guarded}
    process = subprocess.Popen([VAE, *argv], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(process.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(stdin)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
    started, code, peak, sent = time.monotonic(), None, 0.0, False
    while time.monotonic() - started < TIMEOUT:
        if signals and not sent and time.monotonic() - started >= signals[0]:
            for sig in signals[1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
                time.sleep(0.3)
            sent = True
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            code, peak = os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
            code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
            break
        time.sleep(0.02)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        os.wait4(process.pid, 0)
    process.returncode = 0  # (reaped here: Popen must not wait again)
    reader.join()
    lost = [str(p) for p in guarded if _digest(p) != before[p] and "--force" not in argv]
    if code != 128 + signal.SIGKILL:  # (a killed process's temporaries go at the next write there)
        lost += [str(p) for p in cwd.rglob(".vaecli-*.tmp")] + [str(p) for p in cwd.rglob(".tmp*")]
    return Outcome(name, code, b"".join(chunks).decode("utf-8", "replace"), peak, lost)


def _digest(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else None


def command_cases(model: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    """For every option of every command, the command's working form with that option bad."""
    base = {
        "train": [
            "train",
            "--epochs",
            "1",
            "--limit-train",
            "300",
            "--limit-test",
            "100",
            "--hidden",
            "16",
            "--latent-dim",
            "2",
            "--out",
            "{out}",
        ],  # fmt: skip
        "sample": ["sample", str(model), "--out", "{out}.png"],
        "reconstruct": ["reconstruct", str(model), "--out", "{out}.png"],
        "interpolate": ["interpolate", str(model), "0", "1", "--out", "{out}.png"],
        "traverse": ["traverse", str(model), "--dims", "0", "--out", "{out}.png"],
        "map": ["map", str(model), "--n", "50", "--out", "{out}.png"],
        "plot": ["plot", str(model), "--out", "{out}.png"],
        "eval": ["eval", str(model), "--k", "2", "--limit", "20"],
        "encode": ["encode", str(model), str(scratch / "imgs"), "-o", "{out}.jsonl"],
        "decode": ["decode", str(model), str(scratch / "codes.jsonl"), "--out", "{out}"],
        "plugins": ["plugins"],
    }
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    cases = []
    for name, argv in base.items():
        for param in commands[name].params:
            if param.param_type_name != "option" or param.is_flag or param.name == "help":
                continue
            values = _bad_values(param)
            flag = max(param.opts, key=len)
            for value in values:
                cases.append((f"{name} {flag} {value[:20]!r}", [*_without(argv, flag), flag, value]))
        for bad in ("{missing}", "{dir}", "{binary}"):
            if name not in ("train", "plugins"):
                cases.append((f"{name} MODEL={bad}", [argv[0], bad, *argv[2:]]))
    return cases


def _bad_values(param: typer.core.TyperOption) -> list[str]:
    kind = param.bare_type()
    return {"int": BAD_INTS, "float": BAD_FLOATS}.get(str(kind), BAD_TEXTS)


def _without(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return list(argv)
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]


def prepare(scratch: Path) -> Path:
    """A small trained run, an image folder and a codes file to probe with."""
    from PIL import Image

    run = scratch / "run"
    subprocess.run([VAE, "train", "--epochs", "1", "--limit-train", "500", "--limit-test", "100", "--hidden",
                    "16", "--latent-dim", "2", "-q", "--out", str(run)], check=True)  # fmt: skip
    (scratch / "imgs").mkdir()
    for i in range(20):
        Image.new("L", (28, 28), 10 * i).save(scratch / "imgs" / f"{i}.png")
    with open(scratch / "codes.jsonl", "wb") as f:
        subprocess.run([VAE, "encode", str(run), str(scratch / "imgs")], stdout=f, check=True)
    (scratch / "binary").write_bytes(os.urandom(4096))
    (scratch / "dir").mkdir()
    return run


def special_cases(run: Path, scratch: Path) -> list[tuple[str, list[str], dict]]:
    """Hostile configs, full and read-only disks, signals: (name, argv, run_case options)."""
    cases: list[tuple[str, list[str], dict]] = []
    train = ["train", "--epochs", "2", "--limit-train", "3000", "--limit-test", "100", "--hidden", "16"]
    for name, text in BAD_CONFIGS.items():
        path = scratch / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        cases.append((f"config: {name}", ["train", "--config", str(path), "--out", "{out}"], {}))
    cases.append(("config: force over a run", ["train", "--config", str(scratch / "force.yaml"), "--out",
                                               str(run)], {}))  # fmt: skip
    kinds = (([signal.SIGINT], "SIGINT"), ([signal.SIGINT, signal.SIGINT], "2x SIGINT"),
             ([signal.SIGTERM, signal.SIGTERM], "2x SIGTERM"), ([signal.SIGKILL], "SIGKILL"))  # fmt: skip
    for sigs, label in kinds:
        for delay in (3.0, 5.0):
            out = str(scratch / f"signalled-{label.replace(' ', '')}-{delay}")
            cases.append((f"train {label} at {delay}s", [*train, "--checkpoint-every", "2", "--out", out],
                          {"signals": (delay, sigs)}))  # fmt: skip
            cases.append((f"resume after {label} at {delay}s", ["train", "--resume", out], {}))
        cases.append((f"encode {label}", ["encode", str(run), str(scratch / "many"), "-o", "{out}.jsonl"],
                      {"signals": (2.5, sigs)}))  # fmt: skip
    if os.geteuid() == 0:
        for mount, options in (("full", "size=256k"), ("readonly", "ro")):
            target = scratch / mount
            target.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
            for argv in (["sample", str(run), "--out", f"{target}/s.png", "--n", "4000"],
                         ["train", *train, "--out", f"{target}/run"],
                         ["encode", str(run), str(scratch / "many"), "-o", f"{target}/c.jsonl"],
                         ["decode", str(run), str(scratch / "codes.jsonl"), "--out", f"{target}/d"],
                         ["eval", str(target / "run"), "--k", "2"]):  # fmt: skip
                cases.append((f"{mount} disk: {argv[0]}", argv, {}))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one bad value per option")
    parser.add_argument("--log", help="write every case's outcome here")
    parser.add_argument("--only", help="a file of case names, one per line (as in --log): just those")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vaecli-hostile-"))
    run = prepare(scratch)
    (scratch / "force.yaml").write_text("force: true\nepochs: 1\n")
    from PIL import Image

    (scratch / "many").mkdir()
    for i in range(3000):
        Image.new("L", (28, 28), i % 256).save(scratch / "many" / f"{i}.png")
    names = ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.yaml")
    guarded = [run / name for name in names]
    cases = [(n, a, {}) for n, a in command_cases(run, scratch)] + special_cases(run, scratch)
    if args.quick:
        cases = cases[::6]
    if args.only:
        wanted = set(Path(args.only).read_text().splitlines())
        cases = [case for case in cases if case[0] in wanted]
    outcomes = []
    for i, (name, argv, options) in enumerate(cases):
        out = scratch / "out" / f"case{i}"
        out.parent.mkdir(exist_ok=True)
        fill = {"out": str(out), "dir": str(scratch / "dir"), "missing": str(scratch / "missing.png"),
                "binary": str(scratch / "binary")}  # fmt: skip
        argv = [a.format(**fill) if "{" in a and "[" not in a else a for a in argv]
        outcomes.append(run_case(name, argv, scratch, guarded, **options))
    report(outcomes, args.log)
    for mount in ("full", "readonly"):
        subprocess.run(["umount", str(scratch / mount)], check=False, capture_output=True)


def report(outcomes: list[Outcome], log: str | None) -> None:
    kinds = [o.kind for o in outcomes]
    worst = max(outcomes, key=lambda o: o.peak_mb)
    lost = [o for o in outcomes if o.lost]
    print(f"cases {len(outcomes)}, clean {kinds.count('clean')}, internal errors {kinds.count('internal')}, "
          f"tracebacks {kinds.count('traceback')}, time-outs {kinds.count('timeout')}, files lost "
          f"{sum(len(o.lost) for o in lost)}; peak memory {worst.peak_mb:.0f} MB ({worst.name})")  # fmt: skip
    for o in outcomes:
        if o.kind != "clean" or o.lost:
            print(f"  {o.kind:9} exit {o.code}  {o.name}: {o.stderr.strip()[-300:]!r} lost={o.lost}")
    if log:
        with open(log, "w") as f:
            for o in outcomes:
                f.write(f"{o.kind}\t{o.code}\t{o.peak_mb:.0f}MB\t{o.name}\t{o.stderr.strip()!r}\n")


if __name__ == "__main__":
    main()
