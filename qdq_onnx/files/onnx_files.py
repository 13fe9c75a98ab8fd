"""Reading, checking and atomically writing ONNX files."""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from qdq_onnx.errors import QdqError, UnsupportedModelError
from qdq_onnx.files.atomic import write_failed
from qdq_onnx.files.model_checks import ITEMSIZE as _ITEMSIZE
from qdq_onnx.files.model_checks import check_payloads, check_structure
from qdq_onnx.files.runtime import readable_ir_version

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis) needs opset 13
MAX_OPSET = 21  # the newest default-domain opset onnxruntime 1.19 runs
_PROTOBUF_LIMIT = 2**31 - 1




@dataclass(frozen=True)
class ModelFile:
    """A loaded ONNX file: the model, where it came from, and whether its weights were kept
    in external data files (outputs made from it keep them external)."""

    model: onnx.ModelProto
    path: Path
    external: bool


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Load an ONNX file, with external data confined to the model's folder."""
    p = Path(path)
    if p.is_dir():
        raise QdqError(f"{p}: is a folder, expected an .onnx file")
    if not p.exists():
        raise QdqError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise QdqError(f"{p}: the file is empty, expected an ONNX model")
    try:
        model = _parse(p)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise QdqError(f"{p}: not an ONNX model (protobuf parse failed: {exc})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise QdqError(f"{p}: not an ONNX model (no graph or an empty graph)")
    external = _load_external_data(model, p.parent)
    check_structure(model, str(p))
    return ModelFile(model, p, external)


def _parse(p: Path) -> onnx.ModelProto:
    """The model in file `p`, external data not read. A binary file is parsed from a
    read-only memory map: no copy of the file in memory first (about a third of a plain
    `onnx.load` of a 100 MB file, measured); onnx's text formats (by extension) go through
    `onnx.load`."""
    from onnx import serialization

    fmt = serialization.registry.get_format_from_file_extension(p.suffix)
    if fmt not in (None, "protobuf"):
        return onnx.load(str(p), load_external_data=False)
    model = onnx.ModelProto()
    with open(p, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a file system or file kind that cannot be mapped
            model.ParseFromString(f.read())
            return model
        with mapped, memoryview(mapped) as view:
            model.ParseFromString(view)  # the parsed message owns its data: none is aliased
    return model


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file (see `load_model_file`)."""
    return load_model_file(path).model


def _load_external_data(model: onnx.ModelProto, base: Path) -> bool:
    """Read the tensors kept in external files; returns whether there were any."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    root = base.resolve()
    found = False
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        found = True
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (root / location).resolve()
        if root != target and root not in target.parents:
            raise QdqError(
                f"tensor {tensor.name!r}: external data location {location!r} points outside "
                f"the model's folder {root}; refusing to read it"
            )
        if not target.is_file():
            raise QdqError(
                f"tensor {tensor.name!r}: external data file {location!r} is missing "
                f"(looked in {root}); copy it next to the model"
            )
    if found:
        onnx.load_external_data_for_model(model, str(root))
    return found


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise UnsupportedModelError("the model imports no default-domain (ai.onnx) opset")


def ensure_supported_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """Return the model at an opset qdq-onnx supports, upgrading opset 7-12 to 13.

    Returns the (possibly converted) model and a note describing any conversion.
    """
    opset = default_opset(model)
    if opset > MAX_OPSET:
        raise UnsupportedModelError(
            f"the model uses opset {opset}; qdq-onnx supports opsets {MIN_OPSET}-{MAX_OPSET} "
            f"(onnxruntime 1.19): re-export it at opset {MAX_OPSET} or lower"
        )
    if opset >= MIN_OPSET:
        return model, None
    if opset < 7:
        raise UnsupportedModelError(
            f"the model uses opset {opset}; opsets below 7 cannot be upgraded automatically"
        )
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise UnsupportedModelError(
            f"the model uses opset {opset} and upgrading it to {MIN_OPSET} failed: {exc}"
        ) from exc
    return converted, f"upgraded opset {opset} -> {MIN_OPSET} (per-channel Q/DQ needs >= 13)"


def approx_size(model: onnx.ModelProto) -> int:
    """Bytes of weight data plus a margin: cheap, where ByteSize() serialises the model."""
    weights = 0
    for t in model.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        # Element size from the type, not len(raw_data): reading raw_data copies the bytes.
        weights += count * _ITEMSIZE.get(t.data_type, 8)
    return weights + 64 * len(model.graph.node) + 4096


def check_model(model: onnx.ModelProto | str | os.PathLike, what: str = "the model") -> None:
    """Full ONNX check (with shape inference); raise QdqError naming the failure.

    Given a path, the checker reads the file itself (no in-memory serialised copy; external
    data and models over 2 GB work)."""
    try:
        onnx.checker.check_model(str(model) if isinstance(model, (str, os.PathLike))
                                 else model, full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise QdqError(f"{what} fails the ONNX checker: {first}") from exc


def check_output(out: str | os.PathLike, inp: str | os.PathLike | None = None) -> Path:
    """QdqError unless `out` can be written: not a folder, not the input file `inp`, in a
    folder that exists and is writable. Called before any work, so a bad `-o` costs
    nothing."""
    o = Path(out)
    if o.is_dir():
        stem = Path(inp).stem if inp else "model"
        raise QdqError(f"{o}: is a folder; give the output file's path (e.g. "
                       f"{o / (stem + '.out.onnx')})")
    if inp is not None and (same_file(inp, o) or Path(inp).resolve() == o.resolve()):
        raise QdqError(f"the output {o} is the input file; write to another path (inputs "
                       "are never modified)")
    parent = o.parent if str(o.parent) else Path(".")
    if not parent.is_dir():
        raise QdqError(f"{o}: the output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise QdqError(f"{o}: the output folder {parent} is not writable")
    return o


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike,
                      check: str | None = None, external: bool | None = None) -> Path:
    """Write `model` to `path` via temporary files and renames: never a half-written file.

    With `check` (a description such as "the quantized model"), nothing is renamed into
    place unless it passed the full ONNX checker: for an embedded-weight file the checker
    runs on the exact graph protos written (weights reduced to their dims, which is all the
    checker reads of them) before writing, every weight's payload is checked against its
    dims and type (which the ONNX checker does not do), and the written byte count is
    verified; a file with external data is checked by path after writing. With `external`
    (default: when the model is over 2 GB), weights go to one external-data file
    `<name>.data` next to `path`, streamed tensor by tensor.
    """
    out = check_output(path)
    parent = out.parent if str(out.parent) else Path(".")
    readable = readable_ir_version(model.ir_version)
    if readable != model.ir_version:  # written at an IR version the runtime here reads
        model.ir_version = readable
    if external is None:
        external = approx_size(model) >= _PROTOBUF_LIMIT
    if check and not external:
        check_payloads(model, check)
        check_model(checker_view(model), check)
    # Everything is written into a private folder next to the output first (the checker
    # reads external data relative to the model file), then renamed into place.
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise write_failed(out, exc) from exc
    data_name = out.name + ".data"
    try:
        tmp = work / out.name
        with open(tmp, "wb") as fh:
            if external:
                with open(work / data_name, "wb") as dh:
                    written = write_streaming(model, fh, external_data=(dh, data_name))
            else:
                written = write_streaming(model, fh)
        if tmp.stat().st_size != written:
            raise QdqError(f"{out}: wrote {tmp.stat().st_size} bytes, expected {written}")
        if check and external:
            check_model(tmp, check)
        if external:
            os.replace(work / data_name, parent / data_name)
        os.replace(tmp, out)
    except OSError as exc:
        raise write_failed(out, exc) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def skeleton(model: onnx.ModelProto, keep_bytes: int = 1024) -> onnx.ModelProto:
    """The model with every initializer over `keep_bytes` reduced to name, type, dims and a
    one-element payload, for editing the graph (onnx-graphsurgeon) without copying the
    weights. Small initializers (shapes, axes) are kept whole."""
    skel = onnx.ModelProto()
    _copy_fields(model, skel, skip="graph")
    _copy_fields(model.graph, skel.graph, skip="initializer")
    for t in model.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        size = _ITEMSIZE.get(t.data_type)
        if size is None or t.data_location == onnx.TensorProto.EXTERNAL \
                or count * size <= keep_bytes:
            skel.graph.initializer.append(t)
        else:
            skel.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims,
                                       raw_data=bytes(size))
    return skel


def checker_view(model: onnx.ModelProto, keep_bytes: int = 1024) -> onnx.ModelProto:
    """The model as the full ONNX checker needs to see it, without copying its weights:
    every initializer over `keep_bytes` becomes a graph input of the same name, type and
    shape (the checker and shape inference read no more of a weight; newer checkers refuse
    the one-element payloads of `skeleton`). Small initializers (shapes, axes) stay whole,
    as shape inference reads their values."""
    view = onnx.ModelProto()
    _copy_fields(model, view, skip="graph")
    _copy_fields(model.graph, view.graph, skip="initializer")
    inputs = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        size = _ITEMSIZE.get(t.data_type)
        if size is None or t.data_location == onnx.TensorProto.EXTERNAL \
                or count * size <= keep_bytes:
            view.graph.initializer.append(t)
        elif t.name not in inputs:
            view.graph.input.append(onnx.helper.make_tensor_value_info(
                t.name, t.data_type, list(t.dims)))
    return view


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        return pa.exists() and pb.exists() and pa.samefile(pb)
    except OSError:
        return pa.resolve() == pb.resolve()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _copy_fields(src, dst, skip: str | None = None) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INIT_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number


def write_streaming(model: onnx.ModelProto, fh, external_data: tuple | None = None,
                    threshold: int = 1024) -> int:
    """Serialise `model` one initializer at a time.

    Protobuf merges repeated occurrences of an embedded message, so the file is the model
    without weights followed by one `graph { initializer { ... } }` record per weight; a
    parser reads it as the same ModelProto. Peak memory is the model plus one tensor,
    instead of the model plus a full serialised copy. With `external_data=(file, name)`,
    tensors over `threshold` bytes are written to that file and referenced by offset.
    Returns the number of bytes written to `fh`."""
    skel = onnx.ModelProto()
    _copy_fields(model, skel, skip="graph")
    _copy_fields(model.graph, skel.graph, skip="initializer")
    head = skel.SerializeToString()
    fh.write(head)
    written = len(head)
    graph_tag = _varint((_GRAPH_FIELD << 3) | 2)
    init_tag = _varint((_INIT_FIELD << 3) | 2)
    offset = 0
    for tensor in model.graph.initializer:
        if external_data is not None and tensor.data_location != onnx.TensorProto.EXTERNAL:
            data = tensor.raw_data if tensor.HasField("raw_data") else \
                numpy_helper.to_array(tensor).tobytes()
            if len(data) > threshold:
                dh, name = external_data
                dh.write(data)
                ref = onnx.TensorProto(name=tensor.name, dims=tensor.dims,
                                       data_type=tensor.data_type,
                                       data_location=onnx.TensorProto.EXTERNAL)
                for key, value in (("location", name), ("offset", str(offset)),
                                   ("length", str(len(data)))):
                    ref.external_data.add(key=key, value=value)
                offset += len(data)
                tensor = ref
        payload = tensor.SerializeToString()
        inner = init_tag + _varint(len(payload))
        record = graph_tag + _varint(len(inner) + len(payload)) + inner
        fh.write(record)
        fh.write(payload)
        written += len(record) + len(payload)
    return written
