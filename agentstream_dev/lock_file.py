"""The deploy lock (``requirements.txt``): generate it from ``pyproject.toml``, check it is fresh.

Azure Functions installs ``requirements.txt`` when the app deploys, so that file pins every package
of ``[project] dependencies`` (and what they pull in) with hashes, for every Python the app allows
(one universal resolution). ``make lock`` writes it with uv and stamps a digest of the inputs into
its header; ``make test`` checks, offline and in milliseconds, that the digest still matches
``pyproject.toml`` and that every declared range admits its pinned version, so a range changed
without ``make lock`` fails the build instead of deploying something nobody resolved.

    python -m agentstream_dev.lock_file write   # make lock
    python -m agentstream_dev.lock_file check   # part of make test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
DIGEST_PREFIX = "# pyproject-digest: "
# The Python the resolution starts from; the lock holds markers up to the newest Python.
LOWEST_PYTHON = "3.11"
UV_OPTIONS = (
    "--universal",
    "--python-version",
    LOWEST_PYTHON,
    "--generate-hashes",
    "--custom-compile-command",
    "make lock",
)
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)")


class StaleLock(Exception):
    """The lock does not match ``pyproject.toml``; the message says what to do."""


@dataclass(frozen=True)
class Project:
    requires_python: str
    dependencies: tuple[str, ...]

    @classmethod
    def read(cls, pyproject: Path) -> Project:
        project = tomllib.loads(pyproject.read_text())["project"]
        return cls(project["requires-python"], tuple(project["dependencies"]))

    def digest(self) -> str:
        """What the lock was resolved from: the deployed ranges and the resolver's options."""
        inputs = {
            "requires-python": self.requires_python,
            "dependencies": sorted(self.dependencies),
            "options": list(UV_OPTIONS),
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def pins(lock_text: str) -> dict[str, list[str]]:
    """Package name (canonical) -> its pinned versions (one per Python-version marker)."""
    found: dict[str, list[str]] = {}
    for line in lock_text.splitlines():
        match = PIN.match(line)
        if match:
            found.setdefault(canonicalize_name(match["name"]), []).append(match["version"])
    return found


def check(pyproject: Path, lock: Path) -> None:
    """Raise StaleLock unless ``lock`` is what ``make lock`` writes for ``pyproject`` today."""
    project = Project.read(pyproject)
    if not lock.exists():
        raise StaleLock(f"{lock.name} is missing: run `make lock`")
    text = lock.read_text()
    stamped = next(
        (
            line[len(DIGEST_PREFIX) :]
            for line in text.splitlines()
            if line.startswith(DIGEST_PREFIX)
        ),
        None,
    )
    if stamped != project.digest():
        raise StaleLock(
            f"{lock.name} was not generated from the current [project] dependencies of "
            f"{pyproject.name}: run `make lock`"
        )
    pinned = pins(text)
    for declared in project.dependencies:
        requirement = Requirement(declared)
        versions = pinned.get(canonicalize_name(requirement.name))
        if not versions:
            raise StaleLock(f"{lock.name} pins no {requirement.name}: run `make lock`")
        for version in versions:
            if not requirement.specifier.contains(version, prereleases=True):
                raise StaleLock(
                    f"{lock.name} pins {requirement.name}=={version}, outside {declared!r}: "
                    "run `make lock`"
                )
    if "--hash=sha256:" not in text:
        raise StaleLock(f"{lock.name} carries no hashes: run `make lock`")


def write(pyproject: Path, lock: Path) -> None:
    """Resolve the deployed dependencies with uv (network) and write the stamped lock."""
    compiled = subprocess.run(
        [sys.executable, "-m", "uv", "pip", "compile", pyproject.name, *UV_OPTIONS, "--quiet"],
        cwd=pyproject.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = compiled.splitlines(keepends=True)
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1  # uv's comment block, which names the command
    stamp = f"{DIGEST_PREFIX}{Project.read(pyproject).digest()}\n"
    lock.write_text("".join([*lines[:header], stamp, *lines[header:]]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["write", "check"])
    args = parser.parse_args(argv)
    pyproject, lock = REPO / "pyproject.toml", REPO / "requirements.txt"
    if args.command == "write":
        write(pyproject, lock)
        return 0
    try:
        check(pyproject, lock)
    except StaleLock as stale:
        print(stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
