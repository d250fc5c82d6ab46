"""Debian's headless Chromium for the scripts that drive pages in it.

``chromium()`` finds the browser, or (as root, with apt-get) installs the
Debian package ``chromium`` when it is missing; ``FLAGS`` are the switches
both scripts run it with: no sandbox (root in a container), no GPU, nothing
fetched in the background, no first-run pages, no scrollbars in screenshots.
``scripts/screenshot_report.py`` runs the binary itself and adds
``--headless``; ``scripts/browser_pages.py`` hands it to playwright, which does.
"""

from __future__ import annotations

import os
import shutil
import subprocess

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The path of chromium, installed with apt-get when missing (as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("chromium is missing: install the Debian package chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return shutil.which("chromium")
