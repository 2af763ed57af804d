"""The prepared GPU check parses as bash and runs every part the issue asks for (it never runs here)."""

from __future__ import annotations

import shutil
import subprocess

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
