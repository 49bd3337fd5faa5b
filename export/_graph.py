"""Private helpers: build small standard-operator ONNX graphs and run them in onnxruntime.

Every node lives in the default ``ai.onnx`` domain (opset 21), so NNAPI, CoreML and the
quantizer can take the result. ``GraphBuilder`` hands out unique tensor names and collects
nodes and initializers; ``run`` evaluates a model on the CPU provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
IR_VERSION = 10
INPUT_NAME = "features"


class GraphBuilder:
    """Collects nodes and initializers of one graph; names every tensor uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = {INPUT_NAME}

    def _name(self, stem: str) -> str:
        name, k = stem, 1
        while name in self._used:
            k += 1
            name = f"{stem}_{k}"
        self._used.add(name)
        return name

    def const(self, stem: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer (its dtype kept) and return its name."""
        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], stem: str, output: str | None = None, **attrs: Any) -> str:
        """Append one ``ai.onnx`` node; return the name of its (single) output."""
        out = output if output is not None else self._name(stem)
        if output is not None:
            self._used.add(output)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self._name(f"{stem}_node"), **attrs))
        return out

    def model(self, graph_name: str, n_features: int, output: str, metadata: dict[str, str]) -> onnx.ModelProto:
        """The finished model: input ``features`` float32 [N, F], output float32 [N]."""
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N"])],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="carryon")
        model.ir_version = IR_VERSION
        helper.set_model_props(model, metadata)
        return model


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer's values: the weights alone, without graph overhead."""
    return sum(int(numpy_helper.to_array(t).nbytes) for t in model.graph.initializer)


# TreeEnsemble keeps its parameters in attribute tensors, not initializers.
TREE_TENSORS = ("nodes_splits", "leaf_weights", "membership_values")


def tree_tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the TreeEnsemble attribute tensors (thresholds, leaf weights, membership sets)."""
    return sum(
        int(numpy_helper.to_array(attr.t).nbytes)
        for node in model.graph.node if node.op_type == "TreeEnsemble"
        for attr in node.attribute if attr.name in TREE_TENSORS and attr.type == onnx.AttributeProto.TENSOR
    )


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's single output on ``x`` (float32 [N, F]), evaluated by onnxruntime on CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    return np.asarray(out)


_LAYER_OPS = frozenset({"MatMul", "Add", "Gemm", "MatMulInteger", "Mul"})


def layer_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the layers' own parameters: initializers read by MatMul/Add (directly or through a
    DequantizeLinear of an initializer, with its scale and zero point); preprocessing constants excluded."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in _LAYER_OPS:
            continue
        for inp in node.input:
            if inp in inits:
                names.add(inp)
            elif (dq := producer.get(inp)) is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
                names.update(i for i in dq.input if i in inits)
    return sum(int(numpy_helper.to_array(inits[n]).nbytes) for n in names)
