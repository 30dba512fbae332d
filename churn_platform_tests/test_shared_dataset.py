"""A public copy of the project (no team shared folder anywhere): the tests that need the real
dataset skip there, naming the dataset, its public source and CHURN_SHARED_DIR; under CI=true
they fail instead. Run in a copy of this working tree, without its .git, as pytest runs there."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from churn_platform.core.settings import PROJECT_ROOT

REAL_DATASET_TEST = (
    "churn_platform_tests/test_pipeline.py::test_the_real_dataset_is_typed_as_its_readme_describes"
)


def _public_copy(tmp_path: Path) -> Path:
    """Tracked and new files of the working tree, in a folder with no shared/ beside it."""
    files = subprocess.run(["git", "-C", str(PROJECT_ROOT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    copy = tmp_path / "public" / "churn_platform"
    for name in files:
        if (PROJECT_ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, copy / name)
    return copy


def _pytest(copy: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "CHURN_SHARED_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", REAL_DATASET_TEST, "--no-cov", "-p", "no:cacheprovider",
         "-rs", "-q"],
        cwd=copy, env={**environ, **env}, capture_output=True, text=True, timeout=300,
    )


def test_on_a_public_copy_it_skips_saying_what_and_where_from_and_under_ci_it_fails(tmp_path):
    copy = _public_copy(tmp_path)
    here = _pytest(copy)
    assert here.returncode == 0, here.stdout[-3000:]
    assert "1 skipped" in here.stdout
    for needed in ("customer_churn_data.csv", "github.com/euusiade/Data_Exploration_Projects",
                   "CHURN_SHARED_DIR"):
        assert needed in here.stdout, here.stdout[-3000:]

    in_ci = _pytest(copy, CI="true")
    assert in_ci.returncode != 0
    assert "1 error" in in_ci.stdout and "CHURN_SHARED_DIR" in in_ci.stdout  # failed in its fixture


def test_churn_shared_dir_points_a_public_copy_at_the_dataset(tmp_path, real_csv):
    copy = _public_copy(tmp_path)
    shared = tmp_path / "elsewhere"
    (shared / "data").mkdir(parents=True)
    shutil.copy(real_csv, shared / "data" / real_csv.name)
    found = _pytest(copy, CHURN_SHARED_DIR=str(shared), CI="true")
    assert found.returncode == 0 and "1 passed" in found.stdout, found.stdout[-3000:]
