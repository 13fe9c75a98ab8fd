"""Parity mode on the original toolkit's own eight test networks (`original_pool`):
`rules/nvidia-tf-toolkit.yaml` reproduces its default placement, and its case bundles its
custom placement, per Keras layer.

Expected placements: default mode quantizes the input and weight of every Conv2D,
DepthwiseConv2D and Dense and nothing else (the original's layer table). With
ResNetV1QDQCase every residual Add quantizes input 1: the identity input of identity
blocks (the original's own test asserts index 1 on Pippin's first Add) and, on projection
blocks where both inputs are convolution branches, input 1 as running the original under
Keras 3 measured (its own test accepts any index there). InceptionQDQCase adds the
original's MaxPool case: the input of every MaxPooling2D."""

import pytest

pytest.importorskip("tensorflow")

from keras_pool import layer_placement  # noqa: E402
from original_pool import NETWORKS  # noqa: E402

from qdq_onnx import pipeline, quantize_model  # noqa: E402

W = {"input", "weight"}
WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")


@pytest.fixture(scope="module")
def converted():
    out = {}
    for name, build in NETWORKS.items():
        model = build()
        out[name] = (model, pipeline.convert(model))
    return out


def _placement(converted, name, cases=()):
    model, onx = converted[name]
    q = quantize_model(onx, rules="nvidia-tf-toolkit", custom_qdq_cases=list(cases))
    got = layer_placement(q.float_model, q.onnx)
    classes = {layer.name: layer.__class__.__name__ for layer in model.layers}
    return got, classes, [la.name for la in model.layers]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_default_mode_matches_the_original_layer_table(converted, name):
    got, classes, _ = _placement(converted, name)
    weighted = {n for n, c in classes.items() if c in WEIGHTED}
    assert weighted and {n: v for n, v in got.items() if v} == {n: W for n in weighted}


@pytest.mark.parametrize("name,adds", [("frodo", 2), ("sam", 3), ("pippin", 2)])
def test_resnet_case_quantizes_input_1_of_every_residual_add(converted, name, adds):
    got, classes, order = _placement(converted, name, ["ResNetV1QDQCase"])
    found = [n for n in order if classes[n] == "Add"]
    assert len(found) == adds
    assert {n: got.get(n) for n in found} == {n: {1} for n in found}
    others = {n: v for n, v in got.items() if v and classes[n] != "Add"}
    assert others == {n: W for n, c in classes.items() if c in WEIGHTED}


def test_inception_case_quantizes_the_maxpool_input(converted):
    got, classes, _ = _placement(converted, "merry", ["InceptionQDQCase"])
    pools = [n for n, c in classes.items() if c == "MaxPooling2D"]
    assert len(pools) == 1 and got.get(pools[0]) == {0}
    others = {n: v for n, v in got.items() if v and n not in pools}
    assert others == {n: W for n, c in classes.items() if c in WEIGHTED}
