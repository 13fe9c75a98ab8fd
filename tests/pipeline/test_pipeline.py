"""The pipeline façade: one function per CLI verb, settings as frozen objects validated when
made (messages name settings; the CLI names flags), and the old names still working with a
DeprecationWarning."""

import dataclasses

import numpy as np
import onnx
import pytest
from helpers import G

from qdq_onnx import pipeline, quantize_model
from qdq_onnx.cli.main import COMMANDS, main
from qdq_onnx.errors import SettingError


def _model():
    g = G(input_shape=(1, 3, 8, 8))
    a = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    return g.model([g.binary("Add", "add", a, g.conv("c1", a, 4))])


X = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)


def test_every_cli_verb_has_the_pipeline_function_of_its_name():
    verbs = {m.__name__.rsplit(".", 1)[1].removesuffix("_cmd") for m in COMMANDS}
    assert verbs == {"convert", "insert", "calibrate", "finetune", "inspect", "lint",
                     "sensitivity", "report", "rules"}
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
    ranges = pipeline.measure_ranges(q.float_model, plan, X)
    applied, report = pipeline.apply_plan(q.float_model, plan, ranges.amax, "calibrated:max")
    assert report.activation_pairs == q.report.activation_pairs
    assert pipeline.rules("tensorrt").name == "tensorrt"
    assert pipeline.inspect(applied)["quantized_nodes"] == 3


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
    assert pipeline.default_of(pipeline.TrainConfig, "learning_rate") == 1e-5
    with pytest.raises(SettingError, match="did you mean 'batch_size'"):
        pipeline.make_config(pipeline.FitConfig, {"batchsize": 3})
    made = pipeline.make_config(pipeline.FitConfig, {"epochs": 3, "batch_size": None})
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


def test_old_names_still_work_with_a_deprecation_warning():
    model = _model()
    with pytest.warns(DeprecationWarning, match="pipeline.quantize is deprecated"):
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
    with pytest.warns(DeprecationWarning):
        assert pipeline.Placement is pipeline.ResolvedPlacement
    with pytest.warns(DeprecationWarning):
        assert pipeline.Quantized is pipeline.Inserted


def test_old_call_forms_of_calibrate_and_insert():
    q = pipeline.insert(_model())
    with pytest.warns(DeprecationWarning, match="measure_ranges"):
        ranges = pipeline.calibrate(q.float_model, q.plan, X)
    assert ranges.amax == pipeline.measure_ranges(q.float_model, q.plan, X).amax
    with pytest.warns(DeprecationWarning, match="apply_plan"):
        old, _ = pipeline.insert(q.float_model, q.plan, ranges.amax)
    new, _ = pipeline.apply_plan(q.float_model, q.plan, ranges.amax)
    assert old.graph.SerializeToString() == new.graph.SerializeToString()


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
    assert {"onnxruntime", "torch"} <= set(pipeline.BACKENDS)
