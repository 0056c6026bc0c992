"""The architecture is a checked rule: import-linter's contracts in pyproject.toml (layers, a Qt-free engine, Ray only
in the CLI). A change that makes a lower layer import a higher one fails here, with import-linter's report."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports (import-linter, in the dev extra) is not installed")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_import_facts_script_runs():
    run = subprocess.run([sys.executable, "scripts/import_facts.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "cycles between units: 0" in run.stdout and "upward imports: 0" in run.stdout, run.stdout
