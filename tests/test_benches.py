"""Every bench in bench/ still starts: its imports resolve and its command line parses.

The benches import helpers from each other (bench/hub_http.py, bench/fleet.py, bench/rounds.py, bench/report.py);
a rewrite of one once removed names that six others imported, and nothing noticed until someone ran them.
`--help` imports the whole script and exits before it starts a hub, so this costs a second per bench.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(
    path for path in (REPO_ROOT / "bench").glob("*.py") if 'if __name__ == "__main__"' in path.read_text(encoding="utf-8")
)


def test_the_bench_folder_has_runnable_benches() -> None:
    assert len(BENCHES) >= 10, [path.name for path in BENCHES]


@pytest.mark.parametrize("bench", BENCHES, ids=[path.name for path in BENCHES])
def test_bench_starts_and_prints_its_help(bench: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(bench.relative_to(REPO_ROOT)), "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 0, output
    assert "usage:" in done.stdout, output
