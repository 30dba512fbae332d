"""The Makefile picks a Python that requires-python allows, and says which one it needs when the
one it has is not. Fake interpreters stand in for the versions this machine may lack."""

import os
import shutil
import subprocess
from pathlib import Path

from churn_platform.core.settings import PROJECT_ROOT

MAKE = shutil.which("make")

FAKE_PYTHON = """#!/bin/sh
# Answers as Python {version} would: the version, and the Makefile's version test.
echo "$@" >> "{log}"
case "$1" in
  --version) echo "Python {version}" ;;
  -c) exit {check_status} ;;
  *) exit 1 ;;
esac
"""


def _fake(folder: Path, name: str, version: str) -> Path:
    log = folder / f"{name}.log"
    path = folder / name
    ok = version.startswith("3.11.")
    path.write_text(FAKE_PYTHON.format(version=version, log=log, check_status=0 if ok else 1))
    path.chmod(0o755)
    return path


def _make(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    env.pop("PYTHON", None)
    return subprocess.run([MAKE, "-C", str(PROJECT_ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_python_other_than_3_11_stops_setup_with_the_version_it_needs(tmp_path):
    python = _fake(tmp_path, "python3", "3.12.3")
    done = _make("setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}")
    assert done.returncode != 0
    assert "needs Python 3.11 (requires-python >=3.11,<3.12)" in done.stderr
    assert "Python 3.12.3" in done.stderr
    assert "-m venv" not in (tmp_path / "python3.log").read_text()  # stopped before installing


def test_python_3_11_passes_the_check_and_is_asked_for_the_venv(tmp_path):
    python = _fake(tmp_path, "python3", "3.11.9")
    done = _make("setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}")
    assert "needs Python" not in done.stderr
    assert f"-m venv {tmp_path / 'venv'}" in (tmp_path / "python3.log").read_text()


def test_python3_11_on_path_is_preferred_to_python3(tmp_path):
    _fake(tmp_path, "python3", "3.12.3")
    _fake(tmp_path, "python3.11", "3.11.9")
    path = str(tmp_path)  # only the fakes: make runs its recipes with /bin/sh
    dry = _make("-n", "setup", f"VENV={tmp_path / 'venv'}", path=path)
    assert f"{tmp_path / 'python3.11'} -m venv" in dry.stdout
    (tmp_path / "python3.11").unlink()
    dry = _make("-n", "setup", f"VENV={tmp_path / 'venv'}", path=path)
    assert "python3 -m venv" in dry.stdout
