"""ONNX's own conformance suite on classicdream's evaluator, as onnxruntime and the other ONNX backends
prove themselves: `onnx.backend.test.BackendTest` runs tests/onnx_backend.py's backend on

- the node tests of every operator classicdream claims (`classicdream.operators.REGISTRY`), with their
  `_expanded` forms (the operator's function body, where onnx defines one): onnx builds each test's
  model and data from its own case definitions (`onnx.backend.test.case.node`);
- the nine "light" model-zoo nets shipped in the onnx wheel (weights replaced by ConstantOfShape(0.5),
  input arange(n)/n, expected outputs stored beside them).

Which tests belong to which operator is the table INCLUDE below, by test-name prefix as onnxruntime,
onnx-tensorflow and jaxonnxruntime write it; two tests keep it honest against onnx's own graphs (every
claimed operator has tests, and every node test of a claimed operator is included and of that operator).
Exclusions live in one data file, tests/onnx_backend_filters.jsonc, grouped by why, each with its reason.
A test whose graph needs an operator classicdream does not claim is skipped as unsupported, naming it.

64-bit values: classicdream runs JAX without x64 (as it always does), so a float64 or int64 test is
computed at 32 bits and returned at the declared width (tests/onnx_backend.py); float64 tests are judged
by onnx's own tolerance (rtol 1e-3), which float32 meets. Enabling x64 here would change the process for
every other test in the run, and would test a mode classicdream never runs in.
"""
import functools
import json
import re
import unittest
import warnings
from pathlib import Path

import onnx.backend.test
import pytest
from onnx.backend.test.loader import load_model_tests

import classicdream.graph  # noqa: F401  (registers every operator)
from classicdream.operators import REGISTRY
from onnx_backend import FOLDED, ClassicdreamBackend

FILTERS = Path(__file__).with_name('onnx_backend_filters.jsonc')

# Each claimed operator: the prefix of its node tests' names (after 'test_'), as a regex. A test of the
# operator is `test_<prefix>...`; its function body's form ends in `_expanded` or `_expanded_verN`.
INCLUDE = {
    'Abs': r'abs', 'Add': r'add', 'And': r'and(\dd|_bcast\dv\dd)', 'ArgMax': r'argmax', 'ArgMin': r'argmin',
    'AveragePool': r'averagepool', 'BatchNormalization': r'batchnorm', 'Cast': r'cast',
    'CastLike': r'castlike', 'Ceil': r'ceil', 'Celu': r'celu', 'Clip': r'clip', 'Concat': r'concat',
    'ConstantOfShape': r'constantofshape', 'Conv': r'(basic_conv|conv_with)', 'Cos': r'cos', 'Div': r'div',
    'Dropout': r'(training_)?dropout', 'Elu': r'elu', 'Equal': r'equal', 'Erf': r'erf', 'Exp': r'exp',
    'Expand': r'expand', 'Flatten': r'flatten', 'Floor': r'floor', 'Gather': r'gather(?!_elements)',
    'GatherElements': r'gather_elements', 'Gelu': r'gelu', 'Gemm': r'gemm',
    'GlobalAveragePool': r'globalaveragepool', 'GlobalMaxPool': r'globalmaxpool',
    'Greater': r'greater(?!_equal)', 'GreaterOrEqual': r'greater_equal', 'HardSigmoid': r'hardsigmoid',
    'HardSwish': r'hardswish', 'Identity': r'identity', 'InstanceNormalization': r'instancenorm',
    'LRN': r'lrn', 'LayerNormalization': r'layer_normalization', 'LeakyRelu': r'leakyrelu',
    'Less': r'less(?!_equal)', 'LessOrEqual': r'less_equal', 'Log': r'log', 'LogSoftmax': r'logsoftmax',
    'MatMul': r'matmul', 'Max': r'max', 'MaxPool': r'maxpool', 'Mean': r'mean', 'Min': r'min',
    'Mish': r'mish', 'Mod': r'mod', 'Mul': r'mul', 'Neg': r'neg', 'Not': r'not', 'Or': r'or(\dd|_bcast\dv\dd)',
    'PRelu': r'prelu', 'Pad': r'(constant|edge|reflect|wrap)_pad', 'Pow': r'pow', 'Range': r'range',
    'Reciprocal': r'reciprocal', 'ReduceL1': r'reduce_l1', 'ReduceL2': r'reduce_l2',
    'ReduceLogSumExp': r'reduce_log_sum_exp', 'ReduceMax': r'reduce_max', 'ReduceMean': r'reduce_mean',
    'ReduceMin': r'reduce_min', 'ReduceProd': r'reduce_prod', 'ReduceSum': r'reduce_sum(?!_square)',
    'ReduceSumSquare': r'reduce_sum_square', 'Relu': r'relu', 'Reshape': r'reshape', 'Resize': r'resize',
    'Round': r'round', 'Selu': r'selu', 'Shape': r'shape', 'Sigmoid': r'sigmoid', 'Sign': r'sign',
    'Sin': r'sin', 'Size': r'size', 'Slice': r'slice', 'Softmax': r'softmax', 'Softplus': r'softplus',
    'Softsign': r'softsign', 'Split': r'split(?!_to_sequence)', 'Sqrt': r'sqrt', 'Squeeze': r'squeeze',
    'Sub': r'sub', 'Sum': r'sum', 'Tanh': r'tanh', 'ThresholdedRelu': r'thresholdedrelu', 'Tile': r'tile',
    'Transpose': r'transpose', 'Unsqueeze': r'unsqueeze', 'Upsample': r'upsample', 'Where': r'where',
    'Xor': r'xor(\dd|_bcast\dv\dd)',
}
# A prefix ends where the name does or at '_' (so 'sin' is not 'sinh', nor 'log' 'logsoftmax').
NODE_PATTERNS = {op: re.compile(rf'^test_{prefix}(_|$)') for op, prefix in INCLUDE.items()}

LIGHT_MODELS = ('bvlc_alexnet', 'densenet121', 'inception_v1', 'inception_v2', 'resnet50', 'shufflenet',
                'squeezenet', 'vgg19', 'zfnet512')
LIGHT_PATTERN = re.compile(rf'^test_({"|".join(LIGHT_MODELS)})$')

EXPANDED = re.compile(r'_expanded(_ver\d+)?$')


def load_filters(path=FILTERS):
    """{group: {pattern: reason}} from the JSONC file (whole-line // comments allowed)."""
    text = '\n'.join(line for line in path.read_text().splitlines() if not line.lstrip().startswith('//'))
    return json.loads(text)


def node_operator(name):
    """The claimed operator whose include pattern matches node test `name` (without the device), or None."""
    found = [op for op, pattern in NODE_PATTERNS.items() if pattern.search(name)]
    return max(found, key=lambda op: len(INCLUDE[op])) if found else None


def included(name, category):
    if category == 'NodeModel':
        return node_operator(name) is not None
    if category == 'RealModel':
        return bool(LIGHT_PATTERN.search(name))
    return False


def exclusion(name, filters):
    """(group, reason) of the first exclusion pattern matching test `name`, in the file's order; (None, None)."""
    for group, patterns in filters.items():
        for pattern, reason in patterns.items():
            if re.search(pattern, name):
                return group, reason
    return None, None


def _build():
    filters = load_filters()
    tolerances = filters.pop('tolerance', {})
    test_kwargs = {name: {k: v for k, v in spec.items() if k in ('rtol', 'atol')}
                   for name, spec in tolerances.items()}
    backend_test = onnx.backend.test.BackendTest(ClassicdreamBackend, __name__, test_kwargs=test_kwargs)
    cases, names = {}, {}
    for class_name, case in backend_test.test_cases.items():
        category = class_name[len('OnnxBackend'):-len('Test')]
        kept = []
        for attr in [a for a in vars(case) if a.startswith('test_')]:
            name = attr[:-len('_cpu')] if attr.endswith('_cpu') else None
            if name is None or not included(name, category):
                delattr(case, attr)          # another device, or an operator or model not claimed
                continue
            group, reason = exclusion(name, filters)
            if group == 'current_failing':
                setattr(case, attr, unittest.expectedFailure(getattr(case, attr)))
            elif group is not None:
                setattr(case, attr, unittest.skip(f'{group}: {reason}')(getattr(case, attr)))
            kept.append(name)
        if kept:
            cases[class_name] = case
            names[category] = kept
    return backend_test, cases, names, filters, tolerances


with warnings.catch_warnings():            # onnx's case definitions overflow casts on purpose
    warnings.simplefilter('ignore', RuntimeWarning)
    backend_test, _cases, COLLECTED, _filters, _tolerances = _build()
globals().update(_cases)


@pytest.fixture(autouse=True)
def _light_models_in_tmp(monkeypatch, tmp_path):
    """onnx's runner writes a light model's input and expected output under $ONNX_MODELS (default
    ~/.onnx/models/light): keep them in the test's temporary folder."""
    monkeypatch.setenv('ONNX_MODELS', str(tmp_path))


@functools.lru_cache(maxsize=None)
def _node_graph_ops():
    """{node test name: set of its graph's operator types}, from onnx's case definitions."""
    return {case.name: {n.op_type for n in case.model.graph.node} for case in load_model_tests(kind='node')}


def test_every_claimed_operator_has_node_tests():
    ops = _node_graph_ops()
    tested = {op for name in COLLECTED.get('NodeModel', ()) if not EXPANDED.search(name) for op in ops[name]}
    missing = sorted(set(REGISTRY) - tested)
    assert not missing, f'claimed operators with no onnx node test collected: {", ".join(missing)}'
    assert set(INCLUDE) == set(REGISTRY), (f'INCLUDE names no claimed operator {sorted(set(INCLUDE) - set(REGISTRY))}'
                                           f', misses {sorted(set(REGISTRY) - set(INCLUDE))}')


def test_include_patterns_match_the_operators():
    """Every node test of a claimed operator is included, under that operator, and no other: checked
    against the graphs onnx builds, so a renamed or new test is not silently lost."""
    ops = _node_graph_ops()
    wrong = []
    for name in ops:
        base = EXPANDED.sub('', name)
        if base not in ops:
            continue
        real = ops[base] - FOLDED
        claimed = real if len(real) == 1 and real <= set(REGISTRY) else set()
        op = node_operator(name)
        if (op is None) != (not claimed) or (op is not None and op not in real):
            wrong.append(f'{name}: operators {sorted(real)}, included as {op}')
    assert not wrong, 'include patterns disagree with onnx\'s graphs:\n' + '\n'.join(wrong)


def test_light_models_collected():
    assert sorted(n for n in COLLECTED.get('RealModel', ())) == sorted(f'test_{m}' for m in LIGHT_MODELS)


def test_every_exclusion_has_a_reason_and_a_test():
    collected = [n for names in COLLECTED.values() for n in names]
    for group, patterns in _filters.items():
        for pattern, reason in patterns.items():
            assert isinstance(reason, str) and len(reason.split()) >= 3, f'{group}: {pattern!r} gives no reason'
            assert any(re.search(pattern, n) for n in collected), f'{group}: {pattern!r} matches no test'
    for name, spec in _tolerances.items():
        assert len(str(spec.get('reason', '')).split()) >= 3, f'tolerance for {name} gives no reason'
        assert name in collected, f'tolerance for {name}: no such test'


def test_backend_api():
    """The Backend's own entry points: run_node, run_model, the device, and an unclaimed operator."""
    import numpy as np
    from onnx import TensorProto, helper

    from onnx_backend import Unimplemented

    node = helper.make_node('Relu', ['x'], ['y'])
    x = np.array([[-1.0, 2.0]], np.float32)
    (y,) = ClassicdreamBackend.run_node(node, [x])
    np.testing.assert_array_equal(y, [[0.0, 2.0]])
    graph = helper.make_graph([helper.make_node('Shape', ['x'], ['s'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.DOUBLE, [2, 3])],
                              [helper.make_tensor_value_info('s', TensorProto.INT64, [2])])
    (s,) = ClassicdreamBackend.run_model(helper.make_model(graph), [np.zeros((2, 3))])
    assert s.dtype == np.int64 and s.tolist() == [2, 3]
    assert ClassicdreamBackend.supports_device('CPU') and not ClassicdreamBackend.supports_device('CUDA')
    with pytest.raises(Unimplemented, match='Hardmax'):
        ClassicdreamBackend.run_node(helper.make_node('Hardmax', ['x'], ['y']), [x])
