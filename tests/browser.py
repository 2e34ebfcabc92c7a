"""Headless Chromium for the tests that render pages (Debian's chromium, as STACK.md says)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def _headless(*flags: str) -> list[str]:
    """A fresh profile, without the background connections this machine's closed network
    refuses."""
    return [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tempfile.mkdtemp()}",
        *flags,
    ]


def dump_dom(page: Path, *flags: str, budget_ms: int = 5000) -> subprocess.CompletedProcess:
    """The page's DOM after its scripts ran for `budget_ms` of virtual time."""
    command = _headless(f"--virtual-time-budget={budget_ms}", *flags, "--dump-dom", page.as_uri())
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def screenshot(page: Path, shot: Path, *flags: str) -> None:
    command = _headless(*flags, f"--screenshot={shot}", page.as_uri())
    subprocess.run(command, capture_output=True, timeout=120, check=True)
