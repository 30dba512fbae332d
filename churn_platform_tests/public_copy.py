"""A copy of this working tree as a public clone has it: tracked and new files, no .git, no team
shared folder beside it, and no warehouse or instance state from this checkout."""

import shutil
import subprocess
import sys
from pathlib import Path

from churn_platform.core.settings import PROJECT_ROOT


def public_copy(tmp_path: Path, with_venv: bool = False) -> Path:
    """The copy's folder; with_venv links `.venv` to the interpreter running the tests, so the
    commands a newcomer types (`.venv/bin/dagster ...`) run as after `make run` set it up."""
    files = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "ls-files", "-co", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    copy = tmp_path / "public" / "churn_platform"
    for name in files:
        if (PROJECT_ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, copy / name)
    if with_venv:
        (copy / ".venv").symlink_to(Path(sys.prefix))
    return copy
