"""Measuring one command in a child process: wall time, CPU time and peak memory.

Every converter a benchmark compares is run the same way: a small launcher process (a bare
interpreter, `-I -S`) starts the command with `posix_spawn`, waits for it with `wait4` and
writes what the kernel reports for that child: CPU seconds (user + system, all its threads)
and `ru_maxrss`, its peak resident set. The launcher is there because Linux carries a
process's peak over `exec` from the memory it had before: a command spawned straight from
the (large) benchmarking process would report at least that process's own peak. Through
the launcher the floor is the launcher's few MiB. Wall time is taken by the launcher around
the child alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bundler.errors import BundlerError

_LAUNCHER = """
import json, os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(report, "w") as f:
    json.dump({"seconds": seconds, "exit": os.waitstatus_to_exitcode(status),
               "cpu_seconds": usage.ru_utime + usage.ru_stime,
               "peak_rss": usage.ru_maxrss * 1024}, f)
"""


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd`: wall seconds, CPU seconds (user + system, every thread: what other load on
    the machine inflates least), peak resident set in bytes (`ru_maxrss`), and its stdout.

    Raises `BundlerError` with the end of its stderr when it exits non-zero.
    """
    os.sync()  # no writeback of an earlier run's pages during this one
    with tempfile.TemporaryDirectory(prefix="bundler-bench-") as tmp:
        report = os.path.join(tmp, "report.json")
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, report, *cmd]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            subprocess.run(launcher, stdout=out, stderr=err, env=env, check=False)
        try:
            got = json.loads(Path(report).read_text())
        except (OSError, ValueError):
            got = {"exit": None}
        if got["exit"] != 0:
            stderr = Path(err_path).read_text(errors="replace")
            raise BundlerError(
                f"{' '.join(cmd[:3])} ... exited {got['exit']}: {stderr[-2000:].strip()}"
            )
        got["stdout"] = Path(out_path).read_text(errors="replace")
    del got["exit"]
    return got
