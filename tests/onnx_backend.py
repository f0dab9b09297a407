"""classicdream's evaluator as an ONNX backend (`onnx.backend.base.Backend`), for ONNX's own conformance
suite (tests/test_onnx_backend.py runs it through `onnx.backend.test.BackendTest`).

A model runs through `classicdream.graph.run`, eagerly, on the CPU, exactly as classicdream evaluates
any graph: JAX without x64, so 64-bit values are computed at 32 bits. The outputs come back at the width
the graph declares (float32 -> float64, int32 -> int64, ...), never as another kind: an evaluator that
returned a float for an integer output, or a bool for a float one, still fails.

A graph that uses an operator classicdream does not claim (`classicdream.operators.REGISTRY`, plus
`Constant`, which the graph reader folds) is skipped as unsupported (`Unimplemented`, a SkipTest). onnx's
runner swallows its own `BackendIsNotSupposedToImplementIt` and reports such a test as *passed*; a plain
SkipTest subclass makes pytest report it as skipped, with the operator named. Any other failure of a
claimed operator, `classicdream.operators.Unsupported` included, is a failure.
"""
import unittest

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

import classicdream.graph  # noqa: F401  (registers every operator)
from classicdream.graph import run
from classicdream.operators import REGISTRY, Unsupported

FOLDED = frozenset({'Constant'})      # not an operator of REGISTRY: onnx_graph.read_nodes folds it


class Unimplemented(unittest.SkipTest):
    """The graph needs an operator, or a kind of input, that classicdream does not claim."""


def claims(op_type, domain=''):
    return domain in ('', 'ai.onnx') and (op_type in REGISTRY or op_type in FOLDED)


def unclaimed(model):
    """The operator types of `model` (its subgraphs and local functions too) that classicdream does not
    claim, sorted."""
    functions = {(f.domain, f.name) for f in model.functions}
    found = set()

    def walk(graph):
        for node in graph.node:
            if (node.domain, node.op_type) not in functions and not claims(node.op_type, node.domain):
                found.add(node.op_type if node.domain in ('', 'ai.onnx') else f'{node.domain}.{node.op_type}')
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)

    walk(model.graph)
    for f in model.functions:
        walk(f)
    return sorted(found)


def declared_dtype(value_info):
    """The numpy dtype a graph output declares, or None (not a tensor, or no element type)."""
    if value_info.type.WhichOneof('value') != 'tensor_type' or not value_info.type.tensor_type.elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def widened(array, dtype):
    """`array` at the declared `dtype` where it is the same kind at another width (JAX without x64 gives
    float32 for float64, int32 for int64, uint32 for uint64); otherwise unchanged, for the runner to judge."""
    array = np.asarray(array)
    if dtype is None or array.dtype == dtype:
        return array
    return array.astype(dtype) if array.dtype.kind == dtype.kind else array


class ClassicdreamRep(BackendRep):
    def __init__(self, model):
        self.model = model
        initializers = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.output_dtypes = [declared_dtype(o) for o in model.graph.output]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            feeds = dict(zip(self.input_names, inputs))
        for name, value in feeds.items():
            if not isinstance(value, np.ndarray) and not np.isscalar(value):
                raise Unimplemented(f'input {name!r} is a {type(value).__name__} (a sequence, map or optional), '
                                    f'not a tensor')
        try:
            outputs = run(self.model, feeds)
        except Unsupported:
            missing = unclaimed(self.model)
            if missing:
                raise Unimplemented(f'unsupported operator(s): {", ".join(missing)}') from None
            raise
        return tuple(widened(o, d) for o, d in zip(outputs, self.output_dtypes))


class ClassicdreamBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device='CPU', **kwargs):
        return not unclaimed(model)

    @classmethod
    def prepare(cls, model, device='CPU', **kwargs):
        if not cls.supports_device(device):
            raise Unimplemented(f'classicdream runs on the CPU here, not {device}')
        missing = unclaimed(model)
        if missing:
            raise Unimplemented(f'unsupported operator(s): {", ".join(missing)}')
        return ClassicdreamRep(model)

    @classmethod
    def run_model(cls, model, inputs, device='CPU', **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device='CPU', outputs_info=None, **kwargs):
        """One node on its inputs: wrapped in a one-node graph whose output types come from
        `outputs_info` where given (else float)."""
        inputs = [np.asarray(x) for x in inputs]
        names = [n for n in node.input]
        graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
                        for n, x in zip(names, inputs) if n]
        infos = outputs_info or [(np.float32, None)] * len(node.output)
        graph_outputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), s)
                         for n, (d, s) in zip(node.output, infos)]
        opset = kwargs.get('opset_version', onnx.defs.onnx_opset_version())
        model = helper.make_model(helper.make_graph([node], 'run_node', graph_inputs, graph_outputs),
                                  opset_imports=[helper.make_opsetid('', opset)])
        return cls.run_model(model, {n: x for n, x in zip(names, inputs) if n}, device)

    @classmethod
    def supports_device(cls, device):
        return Device(device).type == DeviceType.CPU

