"""Model-level checks every exported model passes before it leaves the build machine.

``check_model`` runs onnx's full checker and the export contract: carryon metadata, opset imports
(ai.onnx 21, ai.onnx.ml 5 only when used, IR version <= 10), one float32 "features" input with a
dynamic batch dimension, one 1-D output named "probability" or "score", and no absolute path in any
string of the model. ``strip_paths`` clears the doc strings that converters fill with build paths.
Device-side: imports only onnx and the standard library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import onnx

AI_ONNX_OPSET = 21
AI_ONNX_ML_OPSET = 5
MAX_IR_VERSION = 10
MIN_ONNXRUNTIME = "1.20"  # the first onnxruntime that loads IR 10 / ai.onnx opset 21 (standard-operator models)
# onnxruntime 1.20 has no kernel for ai.onnx.ml TreeEnsemble (opset 5): "NOT_IMPLEMENTED: Could not find an
# implementation for TreeEnsemble(5)"; 1.21 has one. tests/test_min_runtime.py checks both against real wheels.
TREE_ENSEMBLE_ONNXRUNTIME = "1.21"
INPUT_NAME = "features"
OUTPUT_NAMES = ("probability", "score")
REQUIRED_METADATA = (
    "carryon.feature_names",
    "carryon.spec_hash",
    "carryon.kind",
    "carryon.family",
    "carryon.min_onnxruntime",
)

# Absolute paths: posix with 2+ components (not part of a word, URL or relative path), Windows drive
# or UNC paths, and file: URLs.
_ABSOLUTE_PATH = re.compile(
    r"(?:(?:^|(?<=[\s\"'`=(\[{,;:]))(?:/[^/\s\"'`<>|*?]+){2,})"
    r"|(?:(?<![A-Za-z0-9_])[A-Za-z]:[\\/][^\s\"'`<>|*?]*)"
    r"|(?:(?:^|(?<=[\s\"'`=(\[{,;:]))\\\\[^\\\s]+\\[^\s\"'`]*)"
    r"|(?:file:/[^\s\"'`]*)",
    re.IGNORECASE,
)
_TEXT_BYTES_FIELDS = frozenset({"s", "strings", "string_data"})


class ModelCheckError(ValueError):
    """An exported model breaks the export contract; the message lists every failure."""


def absolute_paths_in(text: str) -> list[str]:
    """The absolute paths (posix, Windows, UNC, file: URLs) found in ``text``."""
    return [m.group(0) for m in _ABSOLUTE_PATH.finditer(text)]


def _is_single(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float) or hasattr(value, "ListFields")


def _items(value: Any) -> list[Any]:
    """A protobuf field's values: repeated containers as lists, single values as one-item lists."""
    return [value] if _is_single(value) else list(value)


def _strings(message: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every text value in a protobuf message, with a readable location (recursive)."""
    for field, value in message.ListFields():
        repeated = not _is_single(value)
        for i, item in enumerate(_items(value)):
            at = f"{where}.{field.name}[{i}]" if repeated else f"{where}.{field.name}"
            if isinstance(item, str):
                yield at, item
            elif isinstance(item, bytes):
                if field.name in _TEXT_BYTES_FIELDS:
                    yield at, item.decode("utf-8", errors="replace")
            elif hasattr(item, "ListFields"):
                yield from _strings(item, at)


def _doc_string_holders(message: Any) -> Iterator[Any]:
    if "doc_string" in message.DESCRIPTOR.fields_by_name:
        yield message
    for _, value in message.ListFields():
        for item in _items(value):
            if hasattr(item, "ListFields"):
                yield from _doc_string_holders(item)


def strip_paths(model: onnx.ModelProto) -> int:
    """Clear (in place) every doc string that holds an absolute path; return how many were cleared."""
    cleared = 0
    for holder in _doc_string_holders(model):
        text = getattr(holder, "doc_string", "")
        if text and absolute_paths_in(text):
            holder.ClearField("doc_string")
            cleared += 1
    return cleared


def _version(text: str) -> tuple[int, ...] | None:
    parts = text.split(".")
    return tuple(int(p) for p in parts) if parts and all(p.isdigit() for p in parts) else None


def min_runtime(model: onnx.ModelProto) -> str:
    """The oldest onnxruntime that runs ``model``'s operators."""
    trees = any(n.op_type == "TreeEnsemble" and n.domain == "ai.onnx.ml" for n in model.graph.node)
    return TREE_ENSEMBLE_ONNXRUNTIME if trees else MIN_ONNXRUNTIME


def _metadata_problems(model: onnx.ModelProto) -> list[str]:
    meta = {p.key: p.value for p in model.metadata_props}
    problems = [f"metadata {key!r} missing" for key in REQUIRED_METADATA if not meta.get(key)]
    raw_names = meta.get("carryon.feature_names")
    if raw_names:
        try:
            names = json.loads(raw_names)
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            problems.append("metadata 'carryon.feature_names' is not a JSON list of feature names")
        elif len(set(names)) != len(names):
            problems.append("metadata 'carryon.feature_names' repeats a name")
    min_ort = meta.get("carryon.min_onnxruntime")
    if min_ort:
        version, needed = _version(min_ort), min_runtime(model)
        if version is None:
            problems.append(f"metadata 'carryon.min_onnxruntime' is not a version: {min_ort!r}")
        elif version < tuple(int(p) for p in needed.split(".")):
            problems.append(
                f"metadata 'carryon.min_onnxruntime' is {min_ort}, below {needed} "
                f"(the first onnxruntime that runs this model's operators at ai.onnx {AI_ONNX_OPSET} / "
                f"ai.onnx.ml {AI_ONNX_ML_OPSET})"
            )
    return problems


def _used_domains(graph: onnx.GraphProto) -> set[str]:
    domains: set[str] = set()
    for node in graph.node:
        domains.add(node.domain or "ai.onnx")
        for attr in node.attribute:
            if attr.HasField("g"):
                domains |= _used_domains(attr.g)
            for sub in attr.graphs:
                domains |= _used_domains(sub)
    return domains


def _opset_problems(model: onnx.ModelProto) -> list[str]:
    problems = []
    if model.ir_version > MAX_IR_VERSION:
        problems.append(
            f"ir_version {model.ir_version} > {MAX_IR_VERSION} (onnxruntime {MIN_ONNXRUNTIME} cannot load it)"
        )
    imports = {op.domain or "ai.onnx": op.version for op in model.opset_import}
    if imports.get("ai.onnx") != AI_ONNX_OPSET:
        problems.append(f"ai.onnx opset is {imports.get('ai.onnx')}, expected {AI_ONNX_OPSET}")
    used = _used_domains(model.graph)
    if "ai.onnx.ml" in imports:
        if imports["ai.onnx.ml"] != AI_ONNX_ML_OPSET:
            problems.append(f"ai.onnx.ml opset is {imports['ai.onnx.ml']}, expected {AI_ONNX_ML_OPSET}")
        if "ai.onnx.ml" not in used:
            problems.append("ai.onnx.ml is imported but no node uses it (import it only when used)")
    others = sorted(set(imports) - {"ai.onnx", "ai.onnx.ml"})
    if others:
        problems.append(f"unexpected opset imports {others} (only ai.onnx and ai.onnx.ml)")
    return problems


def _is_dynamic(dim: onnx.TensorShapeProto.Dimension) -> bool:
    return not dim.HasField("dim_value")


def _feature_count(model: onnx.ModelProto) -> int | None:
    raw = {p.key: p.value for p in model.metadata_props}.get("carryon.feature_names")
    try:
        names = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    return len(names) if isinstance(names, list) else None


def _io_problems(model: onnx.ModelProto) -> list[str]:
    problems = []
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs are {[i.name for i in inputs]}, expected exactly [{INPUT_NAME!r}]")
    else:
        tensor = inputs[0].type.tensor_type
        dims = list(tensor.shape.dim)
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"input {INPUT_NAME!r} is {onnx.TensorProto.DataType.Name(tensor.elem_type)}, not FLOAT")
        if not tensor.HasField("shape") or len(dims) != 2:
            problems.append(f"input {INPUT_NAME!r} must have shape [N, F] (rank 2)")
        else:
            if not _is_dynamic(dims[0]):
                problems.append(f"input {INPUT_NAME!r} has a fixed batch size {dims[0].dim_value}; make it dynamic")
            n_names = _feature_count(model)
            if n_names is not None and dims[1].dim_value != n_names:
                problems.append(
                    f"input {INPUT_NAME!r} has {dims[1].dim_value or 'an unknown number of'} columns, "
                    f"metadata 'carryon.feature_names' lists {n_names}"
                )
    outputs = list(model.graph.output)
    if len(outputs) != 1 or outputs[0].name not in OUTPUT_NAMES:
        problems.append(f"outputs are {[o.name for o in outputs]}, expected one named 'probability' or 'score'")
    else:
        tensor = outputs[0].type.tensor_type
        dims = list(tensor.shape.dim)
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {outputs[0].name!r} is not a FLOAT tensor")
        elif len(dims) != 1 or not _is_dynamic(dims[0]):
            problems.append(f"output {outputs[0].name!r} must have shape [N] (1-D, dynamic batch)")
    return problems


def _path_problems(model: onnx.ModelProto) -> list[str]:
    return [
        f"absolute path {path!r} in {where}"
        for where, text in _strings(model, "model")
        for path in absolute_paths_in(text)
    ]


def check_model(model: onnx.ModelProto, name: str = "model") -> None:
    """Raise ``ModelCheckError`` listing every way ``model`` breaks the export contract."""
    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        problems.append(f"onnx.checker full check failed: {str(exc).strip().splitlines()[0]}")
    problems += _metadata_problems(model)
    problems += _opset_problems(model)
    problems += _io_problems(model)
    problems += _path_problems(model)
    if problems:
        raise ModelCheckError(f"{name} fails the export checks: " + "; ".join(problems))
