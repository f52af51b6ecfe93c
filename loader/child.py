"""Entry point of `loader serve`'s helper processes: `python -m loader.child module:function`, with the
parent's Settings as JSON on stdin (never in argv or the environment, where others could read them).

A plain subprocess rather than multiprocessing: no resource-tracker process (~12 MB) and no semaphores
to leak; the parent stops a child with SIGTERM.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

from loader.process import die_with_parent
from loader.settings import Settings


def start(target: str, settings: Settings) -> subprocess.Popen[bytes]:
    """Run `target` ("package.module:function") in a new Python process with these settings."""
    command = [sys.executable, "-m", "loader.child", target, str(os.getpid())]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(settings.to_json().encode())
    proc.stdin.close()
    return proc


def main() -> None:
    # First of all, before the slow imports: die with the parent, and go at once if it is gone already
    # (killed while we started; we would have been adopted by init and never told).
    die_with_parent()
    if os.getppid() != int(sys.argv[2]):
        sys.exit(0)
    module, _, function = sys.argv[1].partition(":")
    settings = Settings.from_json(sys.stdin.read())
    getattr(importlib.import_module(module), function)(settings)


if __name__ == "__main__":
    main()
