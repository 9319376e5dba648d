"""Open a taskcut report.html (`taskcut demo`'s, or `compare`'s) in headless Chromium: count the images
that loaded, take a screenshot.

Needs Debian's `chromium` (apt-get install chromium); the report itself needs no network.
Run: python benchmarks/screenshot_report.py taskcut-demo/report.html --out report.png
Exits non-zero unless every image on the page decoded.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = 'images ' + ok + '/' + imgs.length;
});</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path("report.png"))
    parser.add_argument("--height", type=int, default=3600)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "report.html"
        probe.write_text(args.report.read_text().replace("</body>", PROBE + "</body>"))
        common = [browser, *FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000"]
        dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
        subprocess.run([*common, f"--screenshot={args.out.resolve()}", f"--window-size=1280,{args.height}",
                        probe.as_uri()], capture_output=True, timeout=120, check=True)
    found = re.search(r"<title>images (\d+)/(\d+)</title>", dom)
    if not found:
        print("the page did not finish loading", file=sys.stderr)
        return 1
    ok, total = int(found.group(1)), int(found.group(2))
    print(f"{args.report}: {ok} of {total} images loaded; screenshot {args.out}")
    return 0 if total > 0 and ok == total else 1


if __name__ == "__main__":
    sys.exit(main())
