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
