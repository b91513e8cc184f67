"""The docs say what the code does: each command's options table matches its `--help`, the
error examples print what the docs show, and `vae --help` lists the commands as a user meets them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from vaecli.cli import COMMANDS, app, main

ROOT = Path(__file__).resolve().parents[1]
COMMAND_DOCS = sorted((ROOT / "docs" / "commands").glob("*.md"))
HEADING = re.compile(r"^(#{1,2}) `vae (\w+)[^`]*`\s*$", re.M)
OPTION = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-[a-z0-9])(?![\w-])", re.I)
ERROR_EXAMPLE = re.compile(r"^ {4}\$ (vae [^\n]+)\n {4}(vae: error: [^\n]+)$", re.M)


def _command_sections() -> dict[str, str]:
    """Each `# vae NAME` or `## vae NAME` section of docs/commands/, by command name."""
    sections: dict[str, str] = {}
    for page in COMMAND_DOCS:
        text = page.read_text()
        heads = list(HEADING.finditer(text))
        for i, head in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            assert head.group(2) not in sections, f"two sections for vae {head.group(2)}"
            sections[head.group(2)] = text[head.end() : end]
    return sections


def _documented_options(section: str) -> set[str]:
    """The options named in the first column of the section's `| option | default | meaning |` table."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| option |"))
    options: set[str] = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first_cell = line.split("|")[1]
        options.update(OPTION.findall(" ".join(re.findall(r"`([^`]*)`", first_cell))))
    return options


def _help_options(command) -> set[str]:
    names = {o for p in command.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts}
    return names - {"--help", "-h"}


def _commands() -> dict[str, object]:
    group = typer.main.get_command(app)
    context = group.context_class(group)
    return {name: group.get_command(context, name) for name in group.list_commands(context)}


def test_every_command_has_one_docs_section():
    assert set(_command_sections()) == set(_commands())


@pytest.mark.parametrize("name", [name for name, *_ in COMMANDS])
def test_docs_options_table_matches_help(name: str):
    documented = _documented_options(_command_sections()[name])
    actual = _help_options(_commands()[name])
    assert documented - actual == set(), f"docs name options vae {name} does not have"
    assert actual - documented == set(), f"vae {name} has options its docs table leaves out"


def test_docs_list_the_root_options():
    overview = (ROOT / "docs" / "commands" / "index.md").read_text()
    root = typer.main.get_command(app)
    assert _help_options(root) <= _documented_options(overview)


def _error_examples() -> list[tuple[str, str]]:
    pages = sorted((ROOT / "docs").rglob("*.md"))
    return [match.groups() for page in pages for match in ERROR_EXAMPLE.finditer(page.read_text())]


def test_docs_have_error_examples():
    assert len(_error_examples()) >= 12


@pytest.mark.parametrize("command,expected", _error_examples(), ids=lambda v: v[:60])
def test_docs_error_example_prints_what_the_docs_show(
    command, expected, small_run, capsys, tmp_path, monkeypatch
):
    """`$ vae ...` then `vae: error: ...` in a doc: the command prints exactly that line. `runs/m`
    stands for a trained run (the tests' small one)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "m").symlink_to(small_run, target_is_directory=True)
    code = main(shlex.split(command)[1:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2)
    assert err[-1] == expected


def test_vae_help_groups_the_commands_in_the_order_a_user_meets_them(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = [name for name, *_ in COMMANDS]
    positions = [re.search(rf"^│ {name}\s", out, re.M).start() for name in names]
    assert positions == sorted(positions)
    assert names[:5] == ["train", "sample", "eval", "encode", "decode"] and names[-1] == "plugins"
    for panel in ("Train and use a model", "Pictures of a model", "Extend"):
        assert panel in out
    for _, _, _, summary in COMMANDS:
        assert len(summary) <= 60 and summary in out
