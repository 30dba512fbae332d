"""SIGTERM stops `make run` and the services, children included, whatever signal dispositions the
caller left them: started as `(trap '' INT; make run)`, `nohup` or `cmd &` leave SIGINT ignored,
and Dagster's processes turn SIGTERM into SIGINT."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from churn_platform import launch
from churn_platform.core.settings import PROJECT_ROOT
from churn_platform_tests.postgres import free_port
from churn_platform_tests.stack import answers, processes_with_env, wait_until

# What a stopped service must be gone within: far below a hang, well above a loaded machine's stop.
STOP_BOUND = 30

# A stand-in for a Dagster process: SIGTERM handled as SIGINT is, and a child of its own.
DAGSTER_LIKE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("up", flush=True)
time.sleep(600)
"""


ORPHAN_THEN_EXIT = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
sys.exit(3)
"""


def _sigint_ignored() -> None:
    """What `(trap '' INT; ...)` from a shell gives: SIGINT ignored, SIGTERM at its default. Set
    both: this test process may itself ignore SIGTERM by now (started with SIGINT ignored, as a
    background job or CI runner starts it, an earlier in-process Dagster run made SIGTERM act as
    SIGINT, design note 14), and an ignored signal stays ignored across exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _spawn(argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """argv as `(trap '' INT; argv)` starts it: SIGINT ignored, and a session of its own so
    that nothing the test does reaches it by accident."""
    return subprocess.Popen(argv, env=env, preexec_fn=_sigint_ignored, start_new_session=True,
                            **kwargs)


def _gone_within(marker: str, seconds: float) -> list[int]:
    """Pids still carrying the marker after the bound (empty: all gone)."""
    deadline = time.monotonic() + seconds
    while (left := processes_with_env("CHURN_TEST_MARKER", marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _launch(marker: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CHURN_TEST_MARKER": marker}
    proc = _spawn([sys.executable, "-m", "churn_platform.launch", *args], env,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    return proc


def test_the_launcher_stops_a_dagster_like_service_and_its_child_though_sigint_was_ignored():
    marker = f"launch-{os.getpid()}-{time.monotonic_ns()}"
    proc = _launch(marker, "--", sys.executable, "-c", DAGSTER_LIKE)
    try:
        # The launcher, the service and its child (a loaded machine may take a moment to show it).
        wait_until("three processes", lambda: len(processes_with_env("CHURN_TEST_MARKER", marker))
                   == 3, timeout=10, interval=0.1)
        proc.send_signal(signal.SIGTERM)
        assert _gone_within(marker, STOP_BOUND) == []
        assert "killed" not in proc.stderr.read()  # stopped by SIGTERM, not by the SIGKILL after
    finally:
        _kill(processes_with_env("CHURN_TEST_MARKER", marker))


def test_without_the_launcher_the_same_service_outlives_sigterm():
    """The other side: what the launcher fixes is real."""
    marker = f"bare-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "CHURN_TEST_MARKER": marker}
    proc = _spawn([sys.executable, "-c", DAGSTER_LIKE], env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(1)
        assert proc.poll() is None
    finally:
        _kill(processes_with_env("CHURN_TEST_MARKER", marker))


def test_what_refuses_sigterm_is_killed_after_the_grace_period():
    marker = f"stubborn-{os.getpid()}-{time.monotonic_ns()}"
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                " print('up', flush=True); time.sleep(600)")
    proc = _launch(marker, "--grace", "1", "--", sys.executable, "-c", stubborn)
    try:
        proc.send_signal(signal.SIGTERM)
        assert _gone_within(marker, STOP_BOUND) == []
        assert "outlived SIGTERM for 1 s and was killed" in proc.stderr.read()
    finally:
        _kill(processes_with_env("CHURN_TEST_MARKER", marker))


def test_a_service_that_ends_passes_on_its_status_and_leaves_no_child_behind():
    """The other way a service stops: by itself. Its orphan is stopped with it."""
    marker = f"ends-{os.getpid()}-{time.monotonic_ns()}"
    before = [signal.getsignal(sig) for sig in launch.STOP_SIGNALS]
    os.environ["CHURN_TEST_MARKER"] = marker
    try:
        status = launch.run([sys.executable, "-c", ORPHAN_THEN_EXIT], grace_seconds=5)
        assert status == 3
        assert _gone_within(marker, STOP_BOUND) == []
    finally:
        del os.environ["CHURN_TEST_MARKER"]
        _kill(processes_with_env("CHURN_TEST_MARKER", marker))
    assert [signal.getsignal(sig) for sig in launch.STOP_SIGNALS] == before  # handlers put back


def test_the_launcher_needs_a_command(capsys):
    with pytest.raises(SystemExit):
        launch.main(["--"])
    assert "no command given" in capsys.readouterr().err


def test_make_run_stops_with_all_its_children_on_sigterm_though_sigint_was_ignored(tmp_path):
    """`make run` as `(trap '' INT; make run &)` starts it, on a free port and a home of its own;
    SIGTERM to make alone, as `kill <pid>` sends it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    marker = f"make-run-{os.getpid()}-{time.monotonic_ns()}"
    port = free_port()
    venv = Path(sys.executable).parent.parent
    env = {**os.environ, "CHURN_TEST_MARKER": marker, "DAGSTER_HOME": str(home),
           "CHURN_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
           "CHURN_BACKUP_DIR": str(tmp_path / "backups")}
    log = (tmp_path / "make-run.log").open("wb")
    # -o setup: the venv running this test is the one to use; make installs nothing.
    make = _spawn(["make", "-o", "setup", "run", f"VENV={venv}", f"PORT={port}"], env,
                  cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until("make run's UI", lambda: answers(f"http://127.0.0.1:{port}/server_info"),
                   180, on_timeout=lambda: (tmp_path / "make-run.log").read_text()[-3000:])
        started = processes_with_env("CHURN_TEST_MARKER", marker)
        assert len(started) >= 4  # make, the launcher, dagster dev, its webserver, daemon...
        make.send_signal(signal.SIGTERM)
        left = _gone_within(marker, STOP_BOUND)
        assert left == [], (left, (tmp_path / "make-run.log").read_text()[-3000:])
    finally:
        _kill(processes_with_env("CHURN_TEST_MARKER", marker))
        log.close()

