"""Every ```python snippet of the README runs as written (each on its own, in a scratch folder that sees the
repository's files), so the documented API cannot drift from the code. A failure names the snippet by its
line in README.md."""
from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def snippets(text: str) -> list[tuple[int, str]]:
    """(first line number of the code in the file, code) of every ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


SNIPPETS = snippets(README.read_text())


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 3, "no ```python snippet found in README.md: did the fence syntax change?"


@pytest.mark.parametrize("line,code", SNIPPETS, ids=[f"README.md:{line}" for line, _ in SNIPPETS])
def test_readme_snippet_runs(line, code, tmp_path, monkeypatch, capsys):
    for entry in ROOT.iterdir():                     # relative paths such as jaxdepth/assets/... resolve;
        if not entry.name.startswith("."):           # files the snippet writes land in tmp_path
            (tmp_path / entry.name).symlink_to(entry)
    monkeypatch.chdir(tmp_path)
    name = f"README.md, python snippet at line {line}"
    try:
        exec(compile(code, name, "exec"), {"__name__": "__readme__"})
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3))
        pytest.fail(f"{name} fails: {type(e).__name__}: {e}\n--- snippet ---\n{code}--- traceback ---\n{tb}",
                    pytrace=False)


def shell_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the first code line, code) of every fenced block marked ``bash`` / ``sh`` or unmarked."""
    blocks, lines, open_at, lang = [], text.split("\n"), None, ""
    for i, line in enumerate(lines):
        if not line.startswith("```"):
            continue
        if open_at is None:
            open_at, lang = i + 1, line[3:].strip()
        else:
            if lang in ("", "bash", "sh"):
                blocks.append((open_at + 1, "\n".join(lines[open_at:i])))
            open_at = None
    return blocks


def shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """(line, argv after ``python -m``) of every ``python -m jaxdepth.*`` command in the README's shell
    blocks (`shell_blocks`; prose mentions elsewhere are not commands), continuation lines joined, ``#``
    comments dropped."""
    import shlex
    found = []
    for first, code in shell_blocks(text):
        for m in re.finditer(r"python -m (jaxdepth\.[\w.]+)((?:\\\n|[^\n|;&])*)", code):
            rest = m.group(2).replace("\\\n", " ")
            found.append((first + code.count("\n", 0, m.start()), [m.group(1), *shlex.split(rest, comments=True)]))
    return found


COMMANDS = shell_commands(README.read_text())


def test_every_documented_command_parses():
    """Each ``python -m jaxdepth.<tool> ...`` the README shows is accepted by that tool's own parser
    (options, subcommands and argument forms; nothing is run), so the documented commands cannot drift from
    the command lines."""
    import importlib

    assert len(COMMANDS) >= 20, "found too few documented commands: did the README's form change?"
    failures = []
    for line, (module, *argv) in COMMANDS:
        tool = module.split(".")[-1]
        parser = importlib.import_module(f"jaxdepth.cli.{tool}").build_parser()
        try:
            parser.parse_args(argv)
        except SystemExit:
            failures.append(f"README.md:{line}: python -m {module} {' '.join(argv)}")
    assert not failures, "documented commands the parsers refuse:\n" + "\n".join(failures)
