"""A public copy of the project (no team shared folder anywhere): the tests that need the real
dataset skip there, naming the dataset, its public source and CHURN_SHARED_DIR; under CI=true
they fail instead. Run in a copy of this working tree, without its .git, as pytest runs there."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from churn_platform_tests.public_copy import public_copy

REAL_DATASET_TEST = (
    "churn_platform_tests/test_pipeline.py::test_the_real_dataset_is_typed_as_its_readme_describes"
)


def _pytest(copy: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "CHURN_SHARED_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", REAL_DATASET_TEST, "--no-cov", "-p", "no:cacheprovider",
         "-rs", "-q"],
        cwd=copy, env={**environ, **env}, capture_output=True, text=True, timeout=300,
    )


def test_on_a_public_copy_it_skips_saying_what_and_where_from_and_under_ci_it_fails(tmp_path):
    copy = public_copy(tmp_path)
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
    copy = public_copy(tmp_path)
    shared = tmp_path / "elsewhere"
    (shared / "data").mkdir(parents=True)
    shutil.copy(real_csv, shared / "data" / real_csv.name)
    found = _pytest(copy, CHURN_SHARED_DIR=str(shared), CI="true")
    assert found.returncode == 0 and "1 passed" in found.stdout, found.stdout[-3000:]
