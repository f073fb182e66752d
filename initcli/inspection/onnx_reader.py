"""The ONNX reader: a model's initializers, its Constant nodes and those of every subgraph,
found by walking the graph (never running it), each named by the node that consumes it and
given the role and layout its op implies."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import InitcliError
from ..optional import require
from .source import Entry, Source, contained, error_text, reading_file, refuse

# (op, input index) -> (the name's suffix, role_hint, layout_hint); Gemm's B layout follows transB
_ONNX_INPUTS = {
    ("Conv", 1): ("weight", "conv", "torch"), ("Conv", 2): ("bias", "bias", None),
    ("ConvTranspose", 1): ("weight", "conv", "torch"), ("ConvTranspose", 2): ("bias", "bias", None),
    ("Gemm", 1): ("weight", "linear", None), ("Gemm", 2): ("bias", "bias", None),
    ("MatMul", 0): ("weight", "linear", "torch"), ("MatMul", 1): ("weight", "linear", "keras"),
    ("Gather", 0): ("weight", "embedding", None),
    ("BatchNormalization", 1): ("weight", "norm_scale", None), ("BatchNormalization", 2): ("bias", "norm_shift", None),
    ("BatchNormalization", 3): ("running_mean", None, None), ("BatchNormalization", 4): ("running_var", None, None),
    ("LayerNormalization", 1): ("weight", "norm_scale", None), ("LayerNormalization", 2): ("bias", "norm_shift", None),
    ("InstanceNormalization", 1): ("weight", "norm_scale", None), ("InstanceNormalization", 2): ("bias", "norm_shift", None),
    ("GroupNormalization", 1): ("weight", "norm_scale", None), ("GroupNormalization", 2): ("bias", "norm_shift", None),
    ("SimplifiedLayerNormalization", 1): ("weight", "norm_scale", None),
    ("LSTM", 1): ("weight_ih", "recurrent", None), ("LSTM", 2): ("weight_hh", "recurrent", None),
    ("LSTM", 3): ("bias", "recurrent", None),
    ("GRU", 1): ("weight_ih", "recurrent", None), ("GRU", 2): ("weight_hh", "recurrent", None),
    ("GRU", 3): ("bias", "recurrent", None),
    ("RNN", 1): ("weight_ih", "recurrent", None), ("RNN", 2): ("weight_hh", "recurrent", None),
    ("RNN", 3): ("bias", "recurrent", None),
}
_PASS_THROUGH = ("Identity", "Cast", "DequantizeLinear")  # the value reaches the next node unchanged
_PRODUCES_LINEAR = ("MatMul", "Gemm", "Conv", "ConvTranspose")
_GENERATED = re.compile(r"^(onnx::|\d+$|Constant)|_output_\d+$|^(const|val)_\d+$")
_FLOAT_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                "FLOAT8E5M2FNUZ")


class OnnxSource(Source):
    """An ONNX model's weights: its initializers, its Constant nodes (what Paddle and many
    exporters emit) and those of every subgraph (If branches, Loop and Scan bodies), each named
    by the node that consumes it ("<node>.weight", "<node>.bias", …) unless the file gave it a
    real name, with role and layout from the op (Conv W is (out, in, k…), Gemm's B follows
    transB, MatMul's constant right operand is (in, out)). External data (models over 2 GB) is
    read one tensor at a time, only from files inside the model's folder."""

    format = "onnx"

    def __init__(self, path: Path) -> None:
        onnx = require("onnx", None, "reading .onnx files")
        self.path = str(path)
        self._base = str(path.parent)
        try:
            with reading_file(path):
                model = onnx.load(str(path), load_external_data=False)
        except InitcliError:
            raise
        except Exception as exc:  # DecodeError and friends
            raise refuse(path, f"is not a readable .onnx file ({error_text(exc)})") from None
        self._helper = onnx.numpy_helper
        type_names = {v: k for k, v in onnx.TensorProto.DataType.items()}
        found, skipped = _onnx_weights(model.graph, onnx, type_names)
        self._values = {}
        entries = []
        for name, value, role, layout in found:
            if isinstance(value, onnx.TensorProto):
                self._check_external(path, name, value, onnx)
                dtype = type_names.get(value.data_type, "?").lower()
                shape = tuple(int(d) for d in value.dims)
            else:
                dtype, shape = value.dtype.name, value.shape
            self._values[name] = value
            entries.append(Entry(name, shape, dtype, role_hint=role, layout_hint=layout))
        self.skipped = tuple(skipped)
        if not entries:
            raise refuse(path, "holds no weights (no initializers, no floating-point Constant nodes, in the graph "
                               "or its subgraphs)")
        self.entries = tuple(entries)

    def _check_external(self, path: Path, name: str, tensor, onnx) -> None:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            return
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if contained(path.parent, location) is None:
            raise refuse(path, f"keeps '{name}' in the external file '{location}', outside its folder: initcli "
                               f"reads external data only from the model's folder")

    def read(self, name: str):
        value = self._values[name]
        if isinstance(value, np.ndarray):
            return value
        try:
            with reading_file(self.path):
                array = self._helper.to_array(value, base_dir=self._base)
        except InitcliError:
            raise
        except Exception as exc:
            raise refuse(self.path, f"cannot be read at '{name}' ({error_text(exc)})") from None
        if array.dtype.kind == "V" or array.dtype.name not in np.sctypeDict:  # ml_dtypes bf16/fp8
            array = array.astype(np.float32)
        return array


def _onnx_weights(graph, onnx, type_names) -> tuple[list, list]:
    """[(name, TensorProto or array, role_hint, layout_hint)] over the graph and its
    subgraphs, and what was left out, counted."""
    producers = {}  # value name -> (TensorProto or array, made by a Constant node)
    consumers = {}  # value name -> [(node, input index, node label)]
    produced_by = {}  # value name -> the node that computes it
    order = []
    constants_left = sparse = count = 0
    stack = [(graph, "")]
    while stack:
        current, scope = stack.pop()
        for tensor in current.initializer:
            if tensor.name not in producers:
                producers[tensor.name] = (tensor, False)
                order.append(tensor.name)
        sparse += len(current.sparse_initializer)
        for node in current.node:
            count += 1
            label = node.name or f"{scope}{node.op_type}_{count}"
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                value = _constant_value(node, type_names)
                if value is None:
                    constants_left += 1
                else:
                    producers[node.output[0]] = (value, True)
                    order.append(node.output[0])
            for output in node.output:
                produced_by[output] = node
            for index, name in enumerate(node.input):
                if name:
                    consumers.setdefault(name, []).append((node, index, label))
            subgraphs = []
            for attribute in node.attribute:
                graphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
                subgraphs.extend((g, f"{label}/{attribute.name}{i if len(graphs) > 1 else ''}/")
                                 for i, g in enumerate(graphs))
            stack.extend(reversed(subgraphs))
    found, used = [], set()
    for value_name in order:
        value, constant = producers[value_name]
        node, index, label = _consumer(value_name, consumers, produced_by)
        suffix, role, layout = None, None, None
        if node is not None:
            suffix, role, layout = _ONNX_INPUTS.get((node.op_type, index), (None, None, None))
            if node.op_type == "Gemm" and index == 1:
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                layout = "torch" if trans_b else "keras"
            if (node.op_type == "MatMul" or (node.op_type, index) == ("Gemm", 1)) and len(_shape_of(value)) != 2:
                role, layout = None, None
            if node.op_type == "Gather" and len(_shape_of(value)) != 2:
                role = None
            if node.op_type == "Add" and len(_shape_of(value)) == 1:
                other = node.input[1 - index] if len(node.input) == 2 else ""
                if getattr(produced_by.get(other), "op_type", None) in _PRODUCES_LINEAR:
                    suffix, role = "bias", "bias"
            if suffix is None:
                suffix = f"input{index}"
        if constant or _GENERATED.search(value_name):
            name = f"{label}.{suffix}" if node is not None else value_name
        else:
            name = value_name
        base, k = name, 2
        while name in used:
            name, k = f"{base}#{k}", k + 1
        used.add(name)
        found.append((name, value, role, layout))
    skipped = []
    if constants_left:
        skipped.append(("Constant nodes", f"{constants_left} integer, scalar or string values (shapes, indices, "
                                          f"epsilons): not weights"))
    if sparse:
        skipped.append(("sparse initializers", f"{sparse} sparse tensors: not read"))
    return found, skipped


def _consumer(value_name: str, consumers: dict, produced_by: dict):
    """The first node that uses the value, looking through casts and identities."""
    seen = set()
    for _ in range(8):
        uses = consumers.get(value_name)
        if not uses:
            return None, None, None
        node, index, label = uses[0]
        if node.op_type in _PASS_THROUGH and index == 0 and node.output and node.output[0] not in seen:
            seen.add(value_name)
            value_name = node.output[0]
            continue
        return node, index, label
    return None, None, None


def _shape_of(value) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, np.ndarray) else tuple(int(d) for d in value.dims)


def _constant_value(node, type_names):
    """A Constant node's value when it can be a weight: floating point with at least two
    elements. Shapes, indices, epsilons and strings are not."""
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.HasField("t"):
            tensor = attribute.t
            size = math.prod(int(d) for d in tensor.dims)
            if type_names.get(tensor.data_type) in _FLOAT_TYPES and len(tensor.dims) >= 1 and size >= 2:
                return tensor
            return None
        if attribute.name == "value_floats" and len(attribute.floats) >= 2:
            return np.asarray(attribute.floats, dtype=np.float32)
    return None
