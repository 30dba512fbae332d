"""`python -m churn_platform.launch [--grace S] -- COMMAND...`: run a service that SIGTERM stops,
with everything it started, whatever signal dispositions this process inherited.

A process that inherits SIGINT as ignored (`cmd &` in a script, `nohup`, some CI runners) keeps
ignoring it, and Dagster's processes turn SIGTERM into SIGINT: `dagster dev` and the code server
would then outlive SIGTERM. The service starts with SIGINT and SIGTERM back at their defaults, in
a process group of its own; SIGTERM, SIGINT or SIGHUP here goes to that whole group, and whatever
of it is left after the grace period is killed. `make run` runs `dagster dev` this way.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

GRACE_SECONDS = 15
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _default_signals() -> None:
    """In the child, before exec: what a terminal would have given it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def start(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """The command in a process group of its own, SIGINT and SIGTERM at their defaults."""
    return subprocess.Popen(argv, preexec_fn=_default_signals, process_group=0, **popen_kwargs)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_group(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait (until the monotonic deadline) for the whole group to end; True if it did."""
    while group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap the leader so the group can empty
        time.sleep(0.1)
    return not group_alive(proc.pid)


def stop(proc: subprocess.Popen, grace_seconds: float = GRACE_SECONDS) -> bool:
    """SIGTERM to the group, SIGKILL to what is left after the grace period; True if none was."""
    signal_group(proc, signal.SIGTERM)
    clean = wait_group(proc, time.monotonic() + grace_seconds)
    if not clean:
        signal_group(proc, signal.SIGKILL)
    proc.wait()
    return clean


def run(argv: list[str], grace_seconds: float = GRACE_SECONDS) -> int:
    """Run the command until it ends or this process is asked to stop; its exit status."""
    received: list[int] = []
    # Before the child starts, so that a signal in between is not lost; put back afterwards.
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
                for sig in STOP_SIGNALS}
    try:
        proc = start(argv)
        while proc.poll() is None and not received:
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        # Asked to stop, or the service ended: either way nothing it started stays behind.
        clean = stop(proc, grace_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and not clean:
        print(f"launch: {argv[0]} outlived SIGTERM for {grace_seconds:g} s and was killed",
              file=sys.stderr)
    code = proc.returncode
    return 128 - code if code < 0 else code


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m churn_platform.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grace", type=float, default=GRACE_SECONDS,
                        help="seconds between SIGTERM and SIGKILL (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parsed = parser.parse_args(args)
    command = parsed.command[1:] if parsed.command[:1] == ["--"] else parsed.command
    if not command:
        parser.error("no command given")
    return run(command, parsed.grace)


if __name__ == "__main__":
    sys.exit(main())
