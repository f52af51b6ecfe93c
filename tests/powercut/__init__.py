"""A simulated power cut: shim.c, preloaded into the processes under test, copies into a shadow folder
what each fsync makes durable; `Shadow.restore` builds the disk a power cut would leave from it alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("shim.c")

# Syncs every file and folder under a root, so that the shim records them all as on disk: the state the
# test starts from.
_SYNC_ALL = """
import os, sys
for top, dirs, files in os.walk(sys.argv[1]):
    for name in files:
        fd = os.open(os.path.join(top, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
"""


def build_shim(out_dir: Path) -> Path:
    library = out_dir / "powercut.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(library), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return library


class Shadow:
    """What the disk under `root` holds, sync by sync, as the shim records it in `folder`."""

    def __init__(self, root: Path, folder: Path, library: Path) -> None:
        self.root, self.folder, self.library = root, folder, library
        for part in ("data", "dirs", "locks"):
            (folder / part).mkdir(parents=True, exist_ok=True)

    def env(self, at: str = "", after: int = 0) -> dict[str, str]:
        """Variables that preload the shim; with `at`, the `after`-th sync of a path holding `at` cuts
        the power (kills the process group) instead of reaching the disk."""
        env = {
            "LD_PRELOAD": str(self.library),
            "POWERCUT_ROOT": str(self.root),
            "POWERCUT_SHADOW": str(self.folder),
        }
        if at:
            env |= {"POWERCUT_AT": at, "POWERCUT_AFTER": str(after)}
        return env

    def sync_all(self) -> None:
        """Record everything under the root as on disk (the state before the test)."""
        subprocess.run(
            [sys.executable, "-c", _SYNC_ALL, str(self.root)], env={**os.environ, **self.env()}, check=True
        )

    def cut_at(self) -> str | None:
        """The path whose sync the power cut came before, once it has come."""
        marker = self.folder / "CUT"
        return marker.read_text().strip() if marker.exists() else None

    def restore(self, dest: Path) -> None:
        """Build at `dest` the disk the cut left: the folders as last synced, each file's bytes as last
        synced (a name on disk whose bytes never were is an empty file)."""
        self._build((self.folder / "root").read_text().strip(), dest)

    def _build(self, key: str, at: Path) -> None:
        at.mkdir()
        listing = self.folder / "dirs" / key
        for line in listing.read_text().splitlines() if listing.exists() else []:
            kind, entry, name = line.split("\t", 2)
            if kind == "d":
                self._build(entry, at / name)
            elif (self.folder / "data" / entry).exists():
                shutil.copyfile(self.folder / "data" / entry, at / name)
            else:
                (at / name).touch()
