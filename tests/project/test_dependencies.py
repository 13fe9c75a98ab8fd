"""setup.cfg's ranges admit the exact versions the two tested environments pin, so a user
installing into their own environment can get what the tests passed with:
constraints.txt (.venv: fine-tuning included, Python 3.11) and constraints-newest.txt
(.venv-newest: the newest onnx and onnxruntime, Python 3.13). Each environment's extras
are the Makefile's."""

import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# constraints file -> (the Makefile variable naming its extras, the Python it was frozen on)
ENVIRONMENTS = {"constraints.txt": ("EXTRAS", "3.11"),
                "constraints-newest.txt": ("EXTRAS_NEWEST", "3.13")}


def pins(name: str) -> dict[str, str]:
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, version = line.split("==")
            out[canonicalize_name(package)] = version
    return out


def extras_of(variable: str) -> list[str]:
    found = re.search(rf"^{variable} = (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, f"the Makefile sets no {variable}"
    return found[1].split(",")


def requirements(extras: list[str]) -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += cfg["options.extras_require"][extra].splitlines()
    return [Requirement(x.strip()) for x in lines if x.strip()]


def cases():
    for name, (variable, python) in ENVIRONMENTS.items():
        for req in requirements(extras_of(variable)):
            if req.marker is None or req.marker.evaluate({"python_version": python}):
                yield pytest.param(name, req, id=f"{name}:{req}")


@pytest.mark.parametrize("constraints,req", cases())
def test_tested_version_is_inside_the_range(constraints, req):
    pinned = pins(constraints)
    name = canonicalize_name(req.name)
    assert name in pinned, f"{req.name} has no exact version in {constraints}"
    assert req.specifier.contains(pinned[name], prereleases=True), \
        f"{req.name}=={pinned[name]} is outside {req.specifier}"


def test_every_requirement_is_tested_in_some_environment():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    tested = {extra for variable, _ in ENVIRONMENTS.values() for extra in extras_of(variable)}
    assert set(cfg["options.extras_require"]) - tested == set()


def test_the_runtimes_sharing_a_module_name_are_never_installed_together():
    for name in ENVIRONMENTS:
        pinned = pins(name)
        assert not {"onnxruntime", "onnxruntime-training-cpu"} <= set(pinned), name
    assert "onnxruntime-training-cpu" in pins("constraints.txt")
    # The second environment is there to test a runtime newer than training's 1.19.
    assert Version(pins("constraints-newest.txt")["onnxruntime"]) >= Version("1.20")


def test_install_requires_are_ranges_not_pins():
    for req in requirements(["train", "runtime", "keras", "report", "images", "test"]):
        assert not re.search(r"(^|,)==", str(req.specifier)), f"{req} is an exact pin"
