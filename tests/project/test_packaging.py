"""A built wheel carries the rule files as package data: installed into a fresh folder,
away from the checkout, qdq-onnx finds and loads both bundled rule sets. Its version is
qdq_onnx/version.py's (setup.cfg reads it from there)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = """
import sys
import qdq_onnx
from qdq_onnx.placement.rules import bundled_rule_files, load_rules
assert qdq_onnx.__file__.startswith(sys.argv[1]), qdq_onnx.__file__
files = bundled_rule_files()
assert sorted(files) == ["nvidia-tf-toolkit", "tensorrt"], files
assert all(str(p).startswith(sys.argv[1]) for p in files.values()), files
print(len(load_rules("tensorrt").op_rules), len(load_rules("nvidia-tf-toolkit").op_rules))
"""


def test_an_installed_wheel_loads_its_rules_from_package_data(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("qdq_onnx-*.whl")
    from qdq_onnx.version import __version__

    assert wheel.name.startswith(f"qdq_onnx-{__version__}-")  # one version: version.py
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    res = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    counts = [int(c) for c in res.stdout.split()]
    assert len(counts) == 2 and min(counts) > 0
