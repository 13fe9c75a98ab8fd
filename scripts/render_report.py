"""Render a qdq-onnx HTML report to PNG in headless Chromium (Debian package `chromium`)
and check that its sections are there: shows the file opens offline, with no server.

    .venv/bin/python scripts/render_report.py REPORT.html OUT.png
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SECTIONS = ("summary", "placement", "lint")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report, png = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    text = report.read_text()
    missing = [s for s in SECTIONS if f"id='{s}'" not in text]
    if missing:
        print(f"missing sections: {missing}", file=sys.stderr)
        return 1
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("headless Chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-sync",
               "--disable-component-update", f"--user-data-dir={profile}",
               "--window-size=1200,2600", f"--screenshot={png}", report.as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    print(f"rendered {report} -> {png} ({png.stat().st_size // 1024} KiB); sections present: "
          f"{', '.join(SECTIONS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
