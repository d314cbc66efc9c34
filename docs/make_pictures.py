"""Regenerate the README's pictures in docs/: run the three combined examples here, then photograph the
report in headless Chromium (Debian's `chromium`), scaled down to stay small.

Run from the checkout's root: PYTHONPATH=. python docs/make_pictures.py [EXAMPLE ...]   (a few minutes;
naming examples, e.g. report.py, remakes only their pictures)
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ("explain_counterexample.py", "certified_map.py", "report.py")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def main() -> None:
    os.chdir(DOCS)
    chosen = sys.argv[1:] or EXAMPLES
    for name in chosen:
        runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    if "report.py" in chosen:
        photograph(DOCS / "report.html", DOCS / "report.png")
        (DOCS / "report.html").unlink()
    for picture in sorted(DOCS.glob("*.png")):
        print(f"{picture.name}: {picture.stat().st_size // 1024} KiB")


def photograph(page: Path, path: Path) -> None:
    """A screenshot of the page in headless Chromium, at 60% of its size."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        raise SystemExit("no headless browser (chromium) found: report.png not made")
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1100,3800", f"--screenshot={shot}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB")
    size = (image.width * 3 // 5, image.height * 3 // 5)
    image.resize(size, Image.LANCZOS).quantize(128).save(path, optimize=True)


if __name__ == "__main__":
    main()
