"""The checkpoint store on its own (a stand-in backend): folders renamed into place whole,
`latest.json` naming the newest, the newest K kept, snapshots and the loop record restored,
and a failed save leaving the previous checkpoint as it was."""

import json
from pathlib import Path

import numpy as np
import pytest

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.checkpoints import CheckpointPolicy, CheckpointStore


class FileBackend:
    """Saves one array to the path it is given, like a real backend saves its state."""

    def __init__(self, value=0.0, fail=False):
        self.value, self.fail, self.loaded = value, fail, None

    def save_checkpoint(self, path: Path) -> None:
        if self.fail:
            (path.parent / "partial").write_text("half")
            raise OSError(28, "No space left on device")
        np.save(path.with_suffix(".npy"), np.array([self.value]))
        path.with_suffix(".npy").rename(path)

    def load_checkpoint(self, path: Path) -> None:
        self.loaded = float(np.load(path, allow_pickle=False)[0]) if path.is_file() else None


def _record(step):
    return {"step": step, "epoch": 0, "batch_in_epoch": step, "history": {}}


def test_save_names_the_newest_and_keeps_k(tmp_path):
    store = CheckpointStore(tmp_path, "fp", keep=2)
    for step in (3, 6, 9):
        folder = store.save(FileBackend(step), _record(step), {"keep_best": np.arange(3.0)})
        assert folder.is_dir() and (folder / "state").is_file()
    assert sorted(p.name for p in tmp_path.glob("ckpt-step*")) == \
        ["ckpt-step0000006", "ckpt-step0000009"]
    info = json.loads((tmp_path / "latest.json").read_text())
    assert info["checkpoint"] == "ckpt-step0000009" and info["fingerprint"] == "fp"
    backend = FileBackend()
    record, arrays = store.load(backend)
    assert backend.loaded == 9.0 and record["step"] == 9
    np.testing.assert_array_equal(arrays["keep_best"], np.arange(3.0))
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_same_step_again_replaces_it(tmp_path):
    store = CheckpointStore(tmp_path, "fp")
    store.save(FileBackend(1.0), _record(5), {})
    store.save(FileBackend(2.0), {**_record(5), "epoch": 1}, {})
    backend = FileBackend()
    record, _ = store.load(backend)
    assert backend.loaded == 2.0 and record["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path, "fp")
    store.save(FileBackend(4.0), _record(4), {})
    with pytest.raises(OSError):
        store.save(FileBackend(fail=True), _record(8), {})
    backend = FileBackend()
    record, _ = store.load(backend)
    assert record["step"] == 4 and backend.loaded == 4.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-step0000004", "latest.json"]


def test_refusals(tmp_path):
    with pytest.raises(QdqError, match="no checkpoint to resume from"):
        CheckpointStore(tmp_path, "fp").load(FileBackend())
    CheckpointStore(tmp_path, "fp").save(FileBackend(), _record(1), {})
    with pytest.raises(QdqError, match="another model or training configuration"):
        CheckpointStore(tmp_path, "other").load(FileBackend())
    (tmp_path / "latest.json").write_text("{")
    with pytest.raises(QdqError, match="unreadable"):
        CheckpointStore(tmp_path, "fp").load(FileBackend())
    (tmp_path / "file").write_text("x")
    with pytest.raises(QdqError, match="is a file"):
        CheckpointStore(tmp_path / "file", "fp")


def test_a_checkpoint_file_of_the_earlier_layout_still_loads(tmp_path):
    """Before checkpoints were folders, `ckpt-stepN` was the backend's file itself."""
    FileBackend(7.0).save_checkpoint(tmp_path / "ckpt-step0000007")
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "ckpt-step0000007",
                                                      "fingerprint": "fp", **_record(7)}))
    backend = FileBackend()
    record, arrays = CheckpointStore(tmp_path, "fp").load(backend)
    assert backend.loaded == 7.0 and record["step"] == 7 and arrays == {}


def test_policy_by_steps_and_by_minutes(monkeypatch):
    import qdq_onnx.finetune.checkpoints as module

    now = [100.0]
    monkeypatch.setattr(module, "monotonic", lambda: now[0])
    policy = CheckpointPolicy(every_steps=3, every_minutes=None)
    due = []
    for step in range(1, 8):
        if policy.due(step):
            due.append(step)
            policy.saved(step)
    assert due == [3, 6]
    timed = CheckpointPolicy(every_steps=None, every_minutes=2.0)
    now[0] += 119.0
    assert not timed.due(1)
    now[0] += 1.0
    assert timed.due(1)
    timed.saved(1)
    assert not timed.due(2)
    assert not CheckpointPolicy(None, None).due(10 ** 6)
