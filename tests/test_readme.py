"""The README's Python blocks run, in order, in one namespace (as a reader pastes them into one session),
and its shell commands name only options the CLI has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FACTORY = '''
import torch

def make_model():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
'''


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


def test_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "file.py").write_text(FACTORY)  # the user file the README's example loads
    namespace: dict = {}
    for index, block in enumerate(python_blocks()):
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_every_option_in_the_readme_exists():
    from opwise.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    shell = "\n".join(re.findall(r"```\n(.*?)```", README, flags=re.S))
    for line in re.findall(r"^opwise (\w+)([^\n#]*)", shell, flags=re.M):
        command, rest = line
        known = {option for action in commands[command]._actions for option in action.option_strings}
        for option in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", rest):
            assert option in known, f"README: opwise {command} {option} is not an option"
