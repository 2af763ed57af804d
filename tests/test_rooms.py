"""The rooms' layering (``.importlinter``) holds, and ``import jbdiff`` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_import_contracts_are_kept() -> None:
    linter = Path(sys.executable).with_name("lint-imports")  # import-linter, a test dependency
    run = subprocess.run([str(linter), "--no-cache"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_import_jbdiff_is_light_and_the_public_api_loads_on_use() -> None:
    code = (
        "import sys, jbdiff\n"
        "assert 'torch' not in sys.modules and 'jbdiff.pipeline' not in sys.modules, sorted(sys.modules)\n"
        "from jbdiff import Pipeline, load_audio, load_codec\n"
        "assert Pipeline.__module__ == 'jbdiff.pipeline' and callable(load_audio) and callable(load_codec)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
