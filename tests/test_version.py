"""One version: pyproject.toml's, which packaging/build puts in the .deb's
name and metadata, is the one `--version` and the About box show."""

from __future__ import annotations

import tomllib

from broker import __version__

from .test_import_cycles import REPO


def test_the_package_and_pyproject_agree_on_the_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
