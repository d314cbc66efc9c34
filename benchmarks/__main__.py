"""`python -m benchmarks`: list the benchmarks with the first line of each one's docstring."""

import ast
from pathlib import Path

for path in sorted(Path(__file__).parent.glob("*.py")):
    if not path.name.startswith("_"):
        summary = (ast.get_docstring(ast.parse(path.read_text())) or "").strip().splitlines()[:1]
        print(f"python -m benchmarks.{path.stem:<18} {summary[0] if summary else ''}")
