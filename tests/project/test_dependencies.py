"""setup.cfg's ranges admit the exact versions in constraints.txt (the tested set), so a
user installing into their own environment can get what the tests passed with."""

import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in cfg["options.extras_require"].values():
        lines += extra.splitlines()
    return [Requirement(x.strip()) for x in lines if x.strip()]


@pytest.mark.parametrize("req", requirements(), ids=str)
def test_tested_version_is_inside_the_range(req):
    pinned = pins()
    name = canonicalize_name(req.name)
    assert name in pinned, f"{req.name} has no exact version in constraints.txt"
    assert req.specifier.contains(pinned[name], prereleases=True), \
        f"{req.name}=={pinned[name]} is outside {req.specifier}"


def test_install_requires_are_ranges_not_pins():
    for req in requirements():
        assert not re.search(r"(^|,)==", str(req.specifier)), f"{req} is an exact pin"
