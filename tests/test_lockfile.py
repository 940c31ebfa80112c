"""requirements.lock matches pyproject.toml, and pins nothing unhashed.

CI and the installer build install only from the lock file, with
`--require-hashes`; a dependency added to pyproject.toml without
`scripts/lock` would otherwise go unnoticed until a fresh machine fails.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, tuple[str, str | None, int]]:
    """name -> (version, marker, number of hashes)."""
    out: dict[str, tuple[str, str | None, int]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\\", 1)[0].split("#", 1)[0].strip()
        if not first:
            continue
        spec, _, marker = first.partition(";")
        name, _, version = spec.strip().partition("==")
        out[canonicalize_name(name)] = (version, marker.strip() or None, block.count("--hash=sha256:"))
    return out


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("gui", "test", "build"):
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_every_declared_dependency_is_pinned_within_its_range():
    locked = pins()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not in requirements.lock: run scripts/lock"
        version = locked[name][0]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is outside {req.specifier}"


def test_every_pin_is_exact_and_hashed():
    for name, (version, _marker, hashes) in pins().items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"{name} is not pinned to one version"
        assert hashes >= 1, f"{name} has no hash"


def test_the_security_floors_hold():
    """The floors pyproject.toml sets for known advisories, and what is locked."""
    locked = pins()
    floors = {"h11": "0.16", "cryptography": "44.0.1", "pyjwt": "2.10.1"}
    for name, floor in floors.items():
        req = next(r for r in declared() if canonicalize_name(r.name) == name)
        assert min_allowed(req) >= Version(floor), f"pyproject.toml lets {name} go below {floor}"
        assert Version(locked[name][0]) >= Version(floor)


def min_allowed(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else Version("0")
