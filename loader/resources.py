"""Where the project's migrations/ and sql/ are.

They live beside the package (the project's layout), which is where a checkout or an editable install
finds them. A wheel cannot put them there: it installs them as data files under <prefix>/share/
customerio-loader/ (pyproject's data-files), and the prefix is whatever the install chose: the
environment, `--user`'s ~/.local, `--prefix P`, or `--target DIR` (DIR itself, beside the package).
"""

from __future__ import annotations

from pathlib import Path

SHARE = Path("share") / "customerio-loader"


def project_dir(name: str) -> Path:
    """`migrations` or `sql`: beside the package if there, else in the nearest share/customerio-loader/
    above it (a prefix holds lib/pythonX.Y/site-packages/loader and share/ side by side; a --target
    directory holds loader/ and share/)."""
    package = Path(__file__).resolve().parent
    beside = package.parent / name
    if beside.is_dir():
        return beside
    for prefix in package.parents:
        installed = prefix / SHARE / name
        if installed.is_dir():
            return installed
    raise FileNotFoundError(f"{name}/ is neither beside the loader package nor under {SHARE} (reinstall?)")
