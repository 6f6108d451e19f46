"""The digest of pyproject.toml's dependency lists, written into constraints.txt by lock.sh.

A test compares it with pyproject.toml, so a dependency changed without `make lock` fails.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path


def deps_digest(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


if __name__ == "__main__":
    print(deps_digest(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
