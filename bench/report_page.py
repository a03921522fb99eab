"""
``python -m bench.report_page [PNG]``: redraw the docs' picture of a run report.

Runs ``mesh demo`` in a temporary folder, writes its ``mesh report`` page and
takes a screenshot of it in headless Chromium (Debian's ``chromium``), by
default to ``docs/images/demo-report.png``. The tests drive the same browser
through `browse` and `screenshot`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mesh.commands

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
"""Offline, quiet, and its errors on standard error."""
DOCS_PICTURE = Path(__file__).resolve().parent.parent / "docs" / "images" / "demo-report.png"


def chromium() -> str | None:
    """The browser on PATH, under either of Debian's and Ubuntu's names."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(browser: str, page: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    """The DOM Chromium builds from the page (stdout) and its log (stderr)."""
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def screenshot(
    browser: str, page: Path, shot: Path, profile: Path, *, width: int = 1200, height: int = 900
) -> None:
    """A PNG of the page's first ``height`` pixels, ``width`` wide."""
    subprocess.run(
        [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )


def main(arguments: list[str]) -> int:
    """Run the demo, write its report, and take the picture."""
    browser = chromium()
    if browser is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    target = Path(arguments[0]) if arguments else DOCS_PICTURE
    with tempfile.TemporaryDirectory(prefix="mesh-report-page-") as folder:
        root = Path(folder)
        mesh.commands.demo(folder=root / "demo")
        page = root / "run.html"
        mesh.commands.report(run=root / "demo" / "out", output=page)
        screenshot(browser, page, target, root / "profile", height=1640)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
