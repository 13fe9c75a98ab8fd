"""The world a process finds itself in: a launcher that says several ranks while MPI for
Python sees one (a site MPI that is not mpi4py's, a Slurm PMI mismatch) is refused in one
line, instead of N independent full runs all writing the same output."""

import importlib
import os
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
from helpers import mlp

from qdq_onnx import quantize_model
from qdq_onnx.errors import QdqError
from qdq_onnx.parallel.world import LAUNCHER_VARIABLES, LauncherMismatch, Single, world

world_module = importlib.import_module("qdq_onnx.parallel.world")  # not the function
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")


@pytest.fixture()
def mpi_of_size(monkeypatch):
    """Set the communicator size the (stand-in) mpi4py world reports; a fresh world()."""
    for name in (*LAUNCHER_VARIABLES, *_RANK_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(world_module, "_WORLD", None)  # world() is made once per process

    def set_size(size):
        class MpiWorld(Single):
            def __init__(self, timeout):
                self.size, self.timeout = size, timeout

        fake = types.ModuleType("qdq_onnx.parallel.mpi")
        fake.MpiWorld = MpiWorld
        monkeypatch.setitem(sys.modules, "qdq_onnx.parallel.mpi", fake)

    return set_size


@pytest.mark.parametrize("variable, value", [("PMI_SIZE", "2"), ("OMPI_COMM_WORLD_SIZE", "4"),
                                             ("PMIX_RANK", "1")])
def test_a_launcher_of_several_ranks_that_mpi_sees_as_one_is_refused(
        mpi_of_size, monkeypatch, variable, value):
    mpi_of_size(1)
    monkeypatch.setenv(variable, value)
    with pytest.raises(LauncherMismatch) as caught:
        world()
    message = str(caught.value)
    assert isinstance(caught.value, QdqError) and "\n" not in message
    assert f"{variable}={value}" in message and "MPI_COMM_WORLD has 1 rank" in message
    assert "mpiexec" in message and "mpich" in message and "--workers N" in message


def test_one_rank_or_a_matching_world_is_not_a_mismatch(mpi_of_size, monkeypatch):
    mpi_of_size(1)
    monkeypatch.setenv("PMI_SIZE", "1")  # mpiexec -n 1
    monkeypatch.setenv("PMI_RANK", "0")
    assert world().size == 1
    monkeypatch.setattr(world_module, "_WORLD", None)
    mpi_of_size(2)
    monkeypatch.setenv("PMI_SIZE", "2")
    assert world().size == 2


def test_the_command_line_stops_in_one_line_before_any_work(tmp_path):
    """The real mpi4py in a plain process: its MPI_COMM_WORLD has one rank, while the
    launcher's variable says two."""
    pytest.importorskip("mpi4py")
    x = np.random.default_rng(0).uniform(0, 1, (64, 64)).astype(np.float32)
    onnx.save(quantize_model(mlp(), calibration_data=x).onnx, tmp_path / "q.onnx")
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items()
           if k not in (*LAUNCHER_VARIABLES, *_RANK_VARIABLES)}
    done = subprocess.run(
        [sys.executable, "-m", "qdq_onnx", "calibrate", str(tmp_path / "q.onnx"), "--data",
         str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.onnx")],
        env={**env, "PMI_SIZE": "2"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PMI_SIZE=2" in lines[0], done.stderr
    assert not (tmp_path / "out.onnx").exists()
