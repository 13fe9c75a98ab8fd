"""The pipeline façade: one function per CLI verb, settings as frozen objects validated when
made (messages name settings; the CLI names flags), at most 25 names, and the old names
working as aliases with a DeprecationWarning until their announced removal version."""

import argparse
import dataclasses

import numpy as np
import onnx
import pytest
from helpers import G

from qdq_onnx import pipeline, quantize_model
from qdq_onnx.cli.main import COMMAND_NAMES, build_parser, main
from qdq_onnx.errors import SettingError
from qdq_onnx.finetune.backend import BACKENDS
from qdq_onnx.pipeline import deprecated
from qdq_onnx.pipeline.config import default_of, make_config
from qdq_onnx.quantize.calibration import calibrate_plan
from qdq_onnx.version import __version__


def _model():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    return g.model([g.binary("Add", "add", a, g.conv("c1", a, 4))])


X = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)


def test_every_cli_verb_has_the_pipeline_function_of_its_name():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verbs = set(sub.choices)
    assert verbs == set(COMMAND_NAMES) == {"convert", "insert", "calibrate", "finetune",
                                           "inspect", "lint", "sensitivity", "report",
                                           "rules"}
    for verb in verbs:
        assert callable(getattr(pipeline, verb)), verb


def test_the_stages_take_settings_objects():
    q = pipeline.insert(_model(), pipeline.PlacementConfig(mode="full"),
                        pipeline.CalibrationConfig(method="mse", show_progress=False), data=X)
    assert q.calibration.method == "mse" and q.plan.placements
    recalibrated, result = pipeline.calibrate(q.qdq, X, pipeline.CalibrationConfig(
        method="max", show_progress=False))
    assert result.method == "max" and recalibrated is not q.qdq
    plan = pipeline.plan_placement(q.float_model, pipeline.PlacementConfig())
    ranges = calibrate_plan(q.float_model, plan, X)
    applied, report = pipeline.apply_plan(q.float_model, plan, ranges.amax, "calibrated:max")
    assert report.activation_pairs == q.report.activation_pairs
    assert pipeline.rules("tensorrt").name == "tensorrt"
    assert pipeline.inspect(applied).quantized_nodes == 3


@pytest.mark.parametrize("cls,settings,setting", [
    (pipeline.CalibrationConfig, {"percentile": 120}, "percentile"),
    (pipeline.CalibrationConfig, {"method": "kl"}, "method"),
    (pipeline.CalibrationConfig, {"batch_size": 0}, "batch_size"),
    (pipeline.CalibrationConfig, {"clip_warning": 2.0}, "clip_warning"),
    (pipeline.PlacementConfig, {"mode": "some"}, "mode"),
    (pipeline.PlacementConfig, {"weight_scheme": "int3"}, "weight_scheme"),
    (pipeline.TrainConfig, {"learning_rate": -1.0}, "learning_rate"),
    (pipeline.TrainConfig, {"warmup_steps": -2}, "warmup_steps"),
    (pipeline.TrainConfig, {"metrics": ("f1",)}, "metrics"),
    (pipeline.FitConfig, {"epochs": 0}, "epochs"),
    (pipeline.FitConfig, {"checkpoint_every_steps": 0}, "checkpoint_every_steps"),
    (pipeline.FitConfig, {"resume": True}, "resume"),
])
def test_a_bad_setting_is_named_not_a_flag(cls, settings, setting):
    with pytest.raises(SettingError) as err:
        cls(**settings)
    assert err.value.setting == setting
    assert str(err.value).startswith(setting) and "--" not in str(err.value)


def test_settings_are_frozen_and_validated_once():
    config = pipeline.CalibrationConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.method = "entropy"
    assert default_of(pipeline.TrainConfig, "learning_rate") == 1e-5
    with pytest.raises(SettingError, match="did you mean 'batch_size'"):
        make_config(pipeline.FitConfig, {"batchsize": 3})
    made = make_config(pipeline.FitConfig, {"epochs": 3, "batch_size": None})
    assert (made.epochs, made.batch_size) == (3, 32)  # None keeps the default


def test_the_cli_names_the_flag_of_a_bad_setting(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(_model(), src)
    np.savez(tmp_path / "d.npz", x=X)
    for argv, message in [
            (["insert", str(src), "-o", str(tmp_path / "o.onnx"), "--calib",
              str(tmp_path / "d.npz"), "--calib-batch-size", "0"],
             "--calib-batch-size must be a positive integer"),
            (["insert", str(src), "-o", str(tmp_path / "o.onnx"), "--calib",
              str(tmp_path / "d.npz"), "--clip-warning", "3"], "--clip-warning must be"),
            (["calibrate", str(src), "-o", str(tmp_path / "o.onnx"), "--data",
              str(tmp_path / "d.npz"), "--percentile", "0"], "--percentile must be in")]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_the_facade_is_the_verbs_the_settings_and_the_results():
    assert len(pipeline.__all__) <= 25
    assert set(pipeline.__all__) >= {"insert", "calibrate", "finetune", "lint", "write",
                                     "PlacementConfig", "TrainConfig", "Inserted", "Typed"}
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None
    assert not set(pipeline.__all__) & set(deprecated.ALIASES)


def _version(text):
    return tuple(int(p) for p in text.split("."))


def test_no_alias_outlives_its_announced_removal_version():
    assert _version(__version__) < _version(deprecated.REMOVAL), (
        f"version {__version__} reached {deprecated.REMOVAL}: remove the aliases of "
        "qdq_onnx/pipeline/deprecated.py (and their entry in docs/architecture.md)")


@pytest.mark.parametrize("old", sorted(deprecated.ALIASES))
def test_an_old_name_is_an_alias_with_a_warning_naming_its_new_place(old):
    with pytest.warns(DeprecationWarning, match=f"pipeline.{old} is deprecated: use "
                                                f".* removed in {deprecated.REMOVAL}"):
        value = getattr(pipeline, old)
    assert value is not None


def test_old_names_still_work_with_a_deprecation_warning():
    model = _model()
    with pytest.warns(DeprecationWarning, match="pipeline.quantize is deprecated: use "
                                                "pipeline.insert"):
        old = pipeline.quantize(model, data=X)
    new = pipeline.insert(model, data=X)
    assert old.qdq.graph.SerializeToString() == new.qdq.graph.SerializeToString()
    with pytest.warns(DeprecationWarning, match="recalibrate"):
        out, _ = pipeline.recalibrate(new.qdq, X)
    assert out.graph.SerializeToString() == pipeline.calibrate(new.qdq, X)[0].graph \
        .SerializeToString()
    with pytest.warns(DeprecationWarning, match="plan_placement"):
        assert pipeline.plan(new.float_model).to_dict() == \
            pipeline.plan_placement(new.float_model).to_dict()
    with pytest.warns(DeprecationWarning, match="placement.config.ResolvedPlacement"):
        from qdq_onnx.placement.config import ResolvedPlacement

        assert pipeline.Placement is ResolvedPlacement
    with pytest.warns(DeprecationWarning):
        assert pipeline.Quantized is pipeline.Inserted


def test_each_new_name_has_one_signature():
    """The old call forms of insert and calibrate (now apply_plan and calibrate_plan) are
    refused with the name to use, not dispatched on the argument types."""
    q = pipeline.insert(_model())
    with pytest.raises(TypeError, match="apply_plan"):
        pipeline.insert(q.float_model, q.plan, {})
    with pytest.raises(TypeError, match="calibrate_plan"):
        pipeline.calibrate(q.float_model, q.plan, X)
    with pytest.raises(TypeError):
        pipeline.insert(q.float_model, weight_bits=4)


def test_write_types_the_remainder_and_saves(tmp_path):
    q = pipeline.insert(_model(), data=X)
    typed = pipeline.write(q.qdq, tmp_path / "q.onnx", data=X)
    saved = onnx.load(str(tmp_path / "q.onnx"))
    assert saved.graph.SerializeToString() == typed.model.graph.SerializeToString()
    assert any(i.data_type == onnx.TensorProto.FLOAT16
               for i in saved.graph.initializer)
    assert typed.lines()


def test_weight_bits_is_a_weight_scheme_now():
    model = _model()
    with pytest.warns(DeprecationWarning, match="weight_scheme"):
        old = quantize_model(model, weight_bits=4)
    new = quantize_model(model, weight_scheme="int8-4bit")
    assert old.onnx.SerializeToString() == new.onnx.SerializeToString()
    with pytest.warns(DeprecationWarning):
        shim = pipeline.quantize(model, weight_bits=4)
    assert shim.qdq.SerializeToString() == new.onnx.SerializeToString()
    with pytest.warns(DeprecationWarning, match="TrainConfig\\(weight_bits"):
        pipeline.TrainConfig(weight_bits=4)
    with pytest.raises(SettingError, match="weight_bits must be 2-8"):
        quantize_model(model, weight_bits=9)


def test_the_training_backend_is_part_of_the_training_settings():
    assert pipeline.TrainConfig().backend == "auto"
    assert {"onnxruntime", "torch"} <= set(BACKENDS)


def test_insert_reads_a_path_and_names_what_it_cannot_take(tmp_path):
    """A user may hand `pipeline.insert` the file instead of the ModelProto: the same plan
    and pairs; anything else is one clear TypeError, not an AttributeError from inside."""
    from helpers import small_classifier

    model = small_classifier()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    before = path.read_bytes()
    by_path = pipeline.insert(str(path))
    by_file = pipeline.insert(pipeline.load(path))
    by_model = pipeline.insert(model)
    assert by_path.plan.to_dict() == by_model.plan.to_dict() == by_file.plan.to_dict()
    assert by_path.report.activation_pairs == by_model.report.activation_pairs > 0
    assert path.read_bytes() == before  # the file is read, never written
    with pytest.raises(TypeError, match="onnx.ModelProto or the path"):
        pipeline.insert(123)
