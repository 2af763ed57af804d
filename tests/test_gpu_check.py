"""The prepared GPU check parses as bash and runs every part the issue asks for (it never runs here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_check_is_valid_bash_and_names_every_part() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    text = SCRIPT.read_text()
    assert "bench_level_training.py" in text and "--config full --batch 32 --device cuda" in text
    assert "bench_unet.py" in text and "bench_full_pipeline.py" in text
    assert "--seconds 30 --minutes 1,10" in text


def test_level_training_part_runs_at_tiny_size(tmp_path: Path) -> None:
    # the GPU check's first part, as `gpu_check.sh OUT cpu` runs it: both paths take real steps
    out = tmp_path / "level_training.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_level_training.py"), "--config", "tiny", "--batch", "2", "--device", "cpu", "--quick", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["setup"]["device"] == "cpu" and result["speedup"] > 0
    assert result["shards"]["step_s"] > 0 and result["on_the_fly"]["step_s"] > 0
