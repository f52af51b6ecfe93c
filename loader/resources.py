"""Where the project's migrations/ and sql/ are.

They live beside the package (the project's layout), which is where a checkout or an editable install
finds them. A wheel cannot put them there: it installs them as data files under
<prefix>/share/customerio-loader/ (pyproject's data-files), so that is where an installed loader looks.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

SHARE = Path("share") / "customerio-loader"


def project_dir(name: str) -> Path:
    """`migrations` or `sql`: beside the package if there, else under the install's data directory
    (the environment's, or the user's for `pip install --user`)."""
    beside = Path(__file__).resolve().parents[1] / name
    if beside.is_dir():
        return beside
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        installed = Path(sysconfig.get_path("data", scheme)) / SHARE / name
        if installed.is_dir():
            return installed
    raise FileNotFoundError(f"{name}/ is neither beside the loader package nor under {SHARE} (reinstall?)")
