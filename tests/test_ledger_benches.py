"""The ledger's statistics benches run end to end at a tiny size and write what they print.

Each run takes a few seconds: simulated losses and scores, no model, no
server, no TensorFlow. The sizes are too small for the figures to mean
much; only what holds at any size is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent


def run_bench(script: str, tmp_path: Path, *options: str) -> dict[str, Any]:
    """Run bench/<script> with `options` and `--json`; the JSON it wrote."""
    out = tmp_path / "figures.json"
    answer = subprocess.run(
        [sys.executable, str(REPOSITORY / "bench" / script), *options, "--json", str(out)],
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    figures: dict[str, Any] = json.loads(out.read_text())
    assert figures["command"].startswith(str(REPOSITORY / "bench" / script))
    return figures


def test_sequential_test_bench_reports_both_scenarios(tmp_path: Path) -> None:
    figures = run_bench("sequential_test.py", tmp_path, "--desks", "50", "--steps", "200", "--edge", "0.5")

    null, better = figures["results"]["null"], figures["results"]["better"]
    assert null["edge"] == 0.0 and better["edge"] == 0.5
    for row in (null, better):
        for share in ("e_better_ever", "e_worse_ever", "t_test_every_step", "t_test_last_step"):
            assert 0.0 <= row[share] <= 1.0
    # Looking at every step can only add rejections to looking at the last one.
    assert null["t_test_every_step"] >= null["t_test_last_step"]
    assert better["e_better_ever"] > null["e_better_ever"]


def test_adaptive_bands_bench_reports_every_level(tmp_path: Path) -> None:
    figures = run_bench("adaptive_bands.py", tmp_path, "--seeds", "2", "--steps", "400", "--levels", "0.8", "0.9")

    assert [row["level"] for row in figures["results"]] == [0.8, 0.9]
    for row in figures["results"]:
        assert 0.0 <= row["static_coverage"] <= 1.0
        assert 0.0 <= row["adaptive_coverage"] <= 1.0
        assert row["static_coverage_expected"] < row["level"]
