"""The accuracy guard: acts where INT8 breaks a model's outputs, stays still where it does
not, records each move with its measurement, and lint agrees with what it decided."""

from __future__ import annotations

import helpers
import numpy as np
import pytest
from helpers import G

from qdq_onnx import PlacementPlan, pipeline
from qdq_onnx.errors import SettingError
from qdq_onnx.quantize.agreement import OutputAgreement, class_axes

RNG = np.random.default_rng(7)


def _scale_weight(g: G, name: str, index: tuple, factor: float) -> None:
    """Multiply `index` of weight `name` (an initializer of `g`) by `factor` in place."""
    w = next(t for t in g.inits if t.name == name)
    arr = np.frombuffer(w.raw_data, np.float32).reshape(tuple(w.dims)).copy()
    arr[index] *= factor
    w.raw_data = arr.tobytes()


def _build_classifier(outlier: bool, seed: int = 1):
    """Conv -> Relu -> Conv -> Relu -> global pooling -> Gemm(32) -> Softmax, its weights
    drawn from `seed` (seed 1: INT8 keeps 100% top-1 agreement on the data below). With
    `outlier`, one channel of c1 is 10^4 times larger and c2 nearly ignores it: c2's
    per-tensor input scale then leaves the other 15 channels no INT8 steps."""
    rng = helpers.RNG  # G draws its weights from it: seeded by the wrapper below
    g = G(input_shape=("N", 4, 8, 8))
    h = g.unary("Relu", "r1", g.conv("c1", "x", 16))
    if outlier:
        _scale_weight(g, "c1_w", (0,), 1e4)
    h = g.unary("Relu", "r2", g.conv("c2", h, 16))
    if outlier:
        _scale_weight(g, "c2_w", (slice(None), 0), 1e-5)
    pooled = g.node("Flatten", "flat", [g.node("GlobalAveragePool", "gap", [h])])
    head = g.node("Gemm", "head", [pooled, g.w("head_w", rng.normal(0, 1, (32, 16))),
                                   g.w("head_b", np.zeros(32))], transB=1)
    return g.model([g.node("Softmax", "prob", [head], axis=-1)])

def _classifier(outlier: bool, seed: int = 1):
    """The model, its weights drawn from a seeded generator; the helpers' shared one is
    put back so later tests draw what they always drew."""
    saved, helpers.RNG = helpers.RNG, np.random.default_rng(seed)
    try:
        return _build_classifier(outlier, seed)
    finally:
        helpers.RNG = saved


@pytest.fixture(scope="module")
def data():
    return RNG.normal(0, 1, (96, 4, 8, 8)).astype(np.float32)


def test_the_guard_moves_the_layer_int8_breaks_and_records_why(data):
    model = _classifier(outlier=True)
    off = pipeline.insert(model, data=data, guard=pipeline.AccuracyGuardConfig(enabled=False))
    assert off.guard is None and "c2" in {p.consumer for p in off.plan.weights()}
    q = pipeline.insert(model, data=data)
    summary = q.plan.accuracy_guard
    assert summary["before"]["prob_out"]["agreement"] < 0.99  # INT8 broke it (0% in ORT 1.19)
    assert summary["met"] and summary["after"]["prob_out"]["agreement"] >= 0.99
    assert "c2" in summary["moved"] and "c1" not in summary["moved"]
    assert "c1" in {p.consumer for p in q.plan.weights()}  # the healthy layer stays INT8
    moved = [d for d in q.plan.left_float if d.rule == "TRT-G001"]
    assert {d.consumer for d in moved} >= {"c2"}
    assert all("argmax agreement" in d.reason and "calibration samples" in d.reason
               for d in moved)
    # the plan round-trips, the file carries it, and lint accepts the decision
    assert PlacementPlan.from_dict(q.plan.to_dict()).accuracy_guard == summary
    report = pipeline.lint(pipeline.type_remainder(q.qdq).model)
    assert report.findings == []
    assert {r.node: r.kept_float for r in report.layers}["c2"] == "TRT-G001"
    assert "float by the plan: TRT-G001" in report.summary()


def test_the_guard_leaves_a_model_int8_does_not_break(data):
    q = pipeline.insert(_classifier(outlier=False), data=data)
    assert q.guard is not None and q.guard.met and q.guard.moved == []
    assert q.plan.accuracy_guard["moved"] == [] and q.guard.trials == 0
    assert q.plan.accuracy_guard["after"]["prob_out"]["agreement"] >= 0.99
    assert not [d for d in q.plan.left_float if d.rule == "TRT-G001"]
    assert {p.consumer for p in q.plan.weights()} == {"c1", "c2", "head"}


def test_the_agreement_target_and_the_original_toolkit_rules(data):
    model = _classifier(outlier=True)
    # no trials allowed: nothing moves, and the miss is said
    none = pipeline.insert(model, data=data, guard=pipeline.AccuracyGuardConfig(max_trials=0))
    assert none.guard.moved == [] and not none.guard.met
    assert "target NOT met" in none.guard.lines()[0]
    # a lower target is met with fewer moves (here: the same one layer)
    low = pipeline.insert(model, data=data, guard=pipeline.AccuracyGuardConfig(agreement=0.5))
    assert low.guard.met and low.plan.accuracy_guard["target"]["agreement"] == 0.5
    # the original toolkit's rule file has no guard: exact parity, every layer quantized
    toolkit = pipeline.insert(model, pipeline.PlacementConfig(rules="nvidia-tf-toolkit"),
                              data=data)
    assert toolkit.guard is None and not toolkit.plan.accuracy_guard
    with pytest.raises(SettingError, match="accuracy_target"):
        pipeline.AccuracyGuardConfig(agreement=1.5)


def test_a_saved_plan_and_a_one_shot_iterator_are_not_guarded(data, tmp_path):
    model = _classifier(outlier=True)
    pipeline.insert(model, data=data, guard=pipeline.AccuracyGuardConfig(enabled=False)
                    ).plan.save(tmp_path / "plan.json")
    saved = pipeline.insert(model, data=data, use_plan=tmp_path / "plan.json")
    assert saved.guard is None and "c2" in {p.consumer for p in saved.plan.weights()}
    once = pipeline.insert(model, data=(b for b in [data[:32], data[32:64]]))
    assert once.guard is None
    assert any("one-shot iterator" in n for n in once.notes)


def test_class_axes_and_sequence_agreement():
    g = G(input_shape=("N", 4, 8, 8))
    flat = g.node("Flatten", "flat", [g.node("GlobalAveragePool", "gap", ["x"])])
    prob = g.node("Softmax", "prob", [flat], axis=1)
    model = g.model([prob, g.unary("Relu", "feat", "x")])
    assert class_axes(model) == {"prob_out": 1, "feat_out": None}
    seq = OutputAgreement(axis=-1)  # [batch, time, classes]: per position
    ref = np.zeros((2, 3, 4), np.float32)
    ref[:, :, 1] = 1
    got = ref.copy()
    got[0, 2, 3] = 2  # one position of sample 0 differs
    seq.update(ref, got)
    assert seq.agreement == 5 / 6 and seq.sqnr_db < 10


def test_cli_insert_prints_the_guard_and_explains_it(data, tmp_path, capsys):

    from qdq_onnx.cli.main import main

    out, captured = helpers.insert_explained(_classifier(outlier=True), data, tmp_path, capsys)
    assert "accuracy guard: 'prob_out' argmax agreement" in captured.err
    assert "moved 1 layer(s)" in captured.err or "moved 2 layer(s)" in captured.err
    assert "target met" in captured.err
    assert "TRT-G001" in captured.out and "of the weighted layers' MACs in INT8" in captured.out
    assert main(["insert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "q2.onnx"), "--no-accuracy-guard"]) == 0
    assert "accuracy guard" not in capsys.readouterr().err


def test_inspect_and_the_report_show_the_guard(data, tmp_path, capsys):
    import onnx

    from qdq_onnx.cli.main import main

    onnx.save(_classifier(outlier=True), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=data)
    out = tmp_path / "q.onnx"
    assert main(["insert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "float  c2  TRT-G001: Quantizing this layer broke" in shown
    assert "accuracy guard (TRT-G001, 96 calibration samples): moved" in shown
    assert "target met" in shown and "after prob_out agreement 100.0%" in shown
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "accuracy guard" in html and "TRT-G001" in html


def test_the_guard_moves_an_attention_s_two_products_together():
    """TensorRT's fused MHA takes both products quantized or neither: a guard that moved
    one would leave lint's TRT-L016 (in FP8, where the guard moves BMM1, it once did)."""
    from helpers import multi_head_attention

    model = multi_head_attention()
    shape = [d.dim_value or 4 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).normal(size=[32, *shape[1:]]).astype(np.float32)
    q = pipeline.insert(model, pipeline.PlacementConfig(scheme="fp8"), data=x)
    consumers = {p.consumer for p in q.plan.placements}
    assert ("bmm1" in consumers) == ("bmm2" in consumers)
    assert "bmm1 + bmm2" in q.plan.accuracy_guard["moved"]  # INT8/FP8 noise moved them
    moved = " ".join(q.plan.accuracy_guard["moved"])
    assert ("bmm1" in moved) == ("bmm2" in moved)
    findings = pipeline.lint(pipeline.type_remainder(q.qdq).model).findings
    assert "TRT-L016" not in {f.id for f in findings}


def test_lint_accepts_a_residual_skip_the_guard_left_float():
    """The guard moves a residual Add's skip Q/DQ as one layer group: lint's TRT-L011 reads
    the recorded decision (the guard's, or a user's spec), and still warns when nothing
    records it."""
    from dataclasses import replace

    from qdq_onnx.placement.plan import FloatDecision

    g = G(input_shape=("N", 4, 8, 8))
    h = g.unary("Relu", "r0", g.conv("c0", "x", 4))
    out = g.binary("Add", "add", g.conv("c1", h, 4), h)
    model = g.model([out])
    x = np.random.default_rng(0).normal(size=(8, 4, 8, 8)).astype(np.float32)
    q = pipeline.insert(model, data=x, guard=pipeline.AccuracyGuardConfig(enabled=False))
    skip = [p for p in q.plan.placements if p.consumer == "add"]
    assert skip  # the rules quantize the skip input

    def linted(rule):
        plan = replace(q.plan, placements=[p for p in q.plan.placements if p not in skip],
                       left_float=[*q.plan.left_float, *(FloatDecision(
                           p.consumer, p.input, p.tensor, rule, "measured", p.layer)
                           for p in skip if rule is not None)])
        qdq, _ = pipeline.apply_plan(q.float_model, plan, q.calibration.amax)
        return {f.id for f in pipeline.lint(qdq).findings}

    assert "TRT-L011" not in linted("TRT-G001")
    assert "TRT-L011" not in linted("SPEC")
    assert "TRT-L011" in linted(None)


def _sqnr_output(db: float) -> OutputAgreement:
    o = OutputAgreement(axis=None, signal=1.0)
    o.noise = 10.0 ** (-db / 10.0)
    return o


def test_a_move_must_buy_min_gain_db_of_a_map_s_sqnr_or_more_agreement():
    """On a non-class output a move is kept for `min_gain_db` of SQNR or for meeting the
    target, never for a few hundredths of a dB; on a class-like one, for any agreement."""
    from dataclasses import replace

    from qdq_onnx.placement.rules import load_rules
    from qdq_onnx.quantize.accuracy_guard import _worth_it
    from qdq_onnx.quantize.agreement import Agreement

    policy = load_rules("tensorrt").accuracy_guard
    assert policy.min_gain_db == 0.5 and policy.sqnr_db == 20

    def maps(db: float) -> Agreement:
        return Agreement({"map": _sqnr_output(db)}, samples=8)

    assert not _worth_it(maps(9.4), maps(9.45), policy)
    assert _worth_it(maps(9.4), maps(10.0), policy)
    assert _worth_it(maps(19.8), maps(20.1), policy)  # onto the target
    assert not _worth_it(maps(9.4), maps(9.0), policy)
    assert _worth_it(maps(9.4), maps(9.45), replace(policy, min_gain_db=0.0))
    cls = OutputAgreement(axis=-1, matches=90, units=100)
    better = OutputAgreement(axis=-1, matches=91, units=100)
    assert _worth_it(Agreement({"p": cls}), Agreement({"p": better}), policy)


def test_the_guard_acts_on_a_map_output_and_keeps_only_moves_worth_a_layer(data):
    """A model whose output is a feature map (SQNR-measured): INT8 breaks c2, the guard
    moves it; with a gain no move can buy and a target none can meet, nothing moves."""
    from dataclasses import replace

    from qdq_onnx.placement.rules import load_rules
    from qdq_onnx.quantize.accuracy_guard import run_guard

    saved, helpers.RNG = helpers.RNG, np.random.default_rng(1)
    try:
        g = G(input_shape=("N", 4, 8, 8))
        h = g.unary("Relu", "r1", g.conv("c1", "x", 16))
        _scale_weight(g, "c1_w", (0,), 1e4)
        out = g.conv("c2", h, 8)
        _scale_weight(g, "c2_w", (slice(None), 0), 1e-5)
        model = g.model([out])
    finally:
        helpers.RNG = saved
    q = pipeline.insert(model, data=data)
    summary = q.plan.accuracy_guard
    (name,) = summary["before"]
    assert summary["before"][name]["agreement"] is None  # a map: measured by its SQNR
    assert summary["before"][name]["sqnr_db"] < 20 and summary["met"]
    assert "c2" in summary["moved"]
    off = pipeline.insert(model, data=data, guard=pipeline.AccuracyGuardConfig(enabled=False))
    policy = replace(load_rules("tensorrt").accuracy_guard, sqnr_db=200.0, min_gain_db=100.0)
    feeds = [{off.float_model.graph.input[0].name: data}]
    result = run_guard(off.float_model, off.plan, off.calibration.amax, feeds, policy,
                       show_progress=False)
    assert result.moved == [] and not result.met and result.trials > 0


def test_the_ranking_pass_keeps_each_run_under_the_memory_cap_with_the_same_noise(
        monkeypatch):
    """The ranking pass fetches every layer's output: under a 1 MiB cap it runs the batch
    in parts of a few samples, and the noise it ranks by is the whole batch's."""
    import qdq_onnx.graph.sessions as sessions
    from qdq_onnx.quantize.accuracy_guard import _coupled, _Runner, added_noise
    from qdq_onnx.quantize.insert import insert_qdq

    saved, helpers.RNG = helpers.RNG, np.random.default_rng(3)
    try:
        g = G(input_shape=("N", 4, 32, 32))
        h = g.unary("Relu", "r1", g.conv("c1", "x", 16))
        model = g.model([g.conv("c2", h, 16)])
    finally:
        helpers.RNG = saved
    batch = RNG.normal(0, 1, (48, 4, 32, 32)).astype(np.float32)
    off = pipeline.insert(model, data=batch, guard=pipeline.AccuracyGuardConfig(enabled=False))
    runner = _Runner(off.float_model, [{off.float_model.graph.input[0].name: batch}])
    qdq, _ = insert_qdq(off.float_model, off.plan, off.calibration.amax)
    groups = _coupled(off.float_model, off.plan.layer_groups())
    sizes: list[int] = []
    real = sessions.run_checked

    def counted(session, names, feed):
        sizes.append(next(iter(feed.values())).shape[0])
        return real(session, names, feed)

    monkeypatch.setattr(sessions, "run_checked", counted)
    whole = added_noise(runner, qdq, groups)
    # the one-sample probe, then one float and one quantized run: the batch fits 512 MiB
    assert sizes == [1, 48, 48]
    sizes.clear()
    capped = added_noise(runner, qdq, groups, batch_mib=1)
    # one sample's three layer outputs (c1, r1, c2) are 192 KiB: five samples per run;
    # the probe's float run is reused for the first sample
    assert sizes[:2] == [1, 1] and max(sizes) == 5 and sum(sizes) == 2 * 48
    assert capped.keys() == whole.keys() and all(whole[k] > 0 for k in whole)
    assert all(capped[k] == pytest.approx(whole[k], rel=1e-9) for k in whole)
