"""Names the README imports resolve the same way however the package was imported before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fresh(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (no module imported by other tests), from the checkout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_heatmap_is_always_the_function():
    result = fresh(
        "from opwise.attribution import heatmap as first\n"
        "import opwise.attribution.pictures\n"
        "from opwise.attribution import heatmap as second\n"
        "import opwise.attribution as package\n"
        "assert first is second is package.heatmap and callable(first), (first, second)\n"
    )
    assert result.returncode == 0, result.stderr


def test_allocator_and_alpha_options_are_attributes():
    result = fresh(
        "import opwise\n"
        "assert callable(opwise.bounds.allocator.retain_freed_memory)\n"
        "from opwise.bounds import AlphaOptions\n"
        "assert opwise.AlphaOptions is AlphaOptions\n"
    )
    assert result.returncode == 0, result.stderr
