"""The registry of ONNX operators graph.py evaluates, and how each treats the layout of activations.

Inside evaluation a 4-D activation is usually NHWC (XLA:CPU's fast convolution layout), while ONNX
speaks NCHW; a tf2onnx graph's input is NHWC in ONNX itself. Rather than transpose at every operator,
each value carries the permutation that lays its ONNX value out as the array held (``Laid.perm``: None
for ONNX's own order, ``NHWC`` for an NCHW tensor held channels-last), and each operator says what it
needs (``Operator.layout``):

- ``'pointwise'``: any layout; every input is laid out like the first permuted one (constants broadcast
  as ONNX broadcasts them), and the output keeps that layout;
- ``'spatial'``: its first input channels-last (convolutions, pooling, LRN, resizing); other inputs
  (weights) in ONNX's order;
- ``'axes'``: any layout, the function maps the axes it is given through ``perm`` (concatenation,
  splitting, slicing, softmax, reductions); it returns its arrays laid out as its input, or a ``Laid``;
- ``'onnx'``: ONNX's own order in and out (reshapes, matrix products, gathers, shape arithmetic).

Inputs listed in ``Operator.static`` must be known while a program is traced: shapes, axes, pads, scales.
They arrive as numpy arrays: a constant of the file, or shape arithmetic (``Shape`` of an activation is
static under jit, and every operator whose inputs are all numpy computes in numpy). So each image size
gets its own exact shapes. Attributes an older opset wrote as inputs, or the reverse, are read either way
(``attr_or_input``), so one function serves every version of an operator.
"""
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

NHWC = (0, 2, 3, 1)           # an NCHW tensor held channels-last: array = onnx_value.transpose(NHWC)


class Laid(NamedTuple):
    """A value as evaluation holds it: the array, the permutation from its ONNX order (None: ONNX's own),
    and whether the array's axes 1 and 2 are the image's height and width inside a padded bucket."""
    array: Any
    perm: Optional[tuple] = None
    image: bool = False


class Unsupported(ValueError):
    """A graph classicdream cannot evaluate: said in one line, naming the node."""


@dataclass(frozen=True)
class Operator:
    fn: Callable
    layout: str = 'onnx'
    static: tuple = ()                  # input positions that must be known while tracing
    border: Any = 'exact'               # inside a padded bucket: see graph.py (None, a fill, or a function)
    spatial: Optional[Callable] = None  # (node, size, axis) -> output extent; None: not known statically
    outputs: int = 1                    # how many outputs it computes (others, e.g. Dropout's mask, are not)
    extent: bool = False                # inside a bucket it is told the true extent (global average pooling)


REGISTRY = {}


def register(*names, **kind):
    """Decorator: `fn(node, *inputs)` evaluates the operators `names` (see Operator for `kind`)."""
    def add(fn):
        for name in names:
            if name in REGISTRY:
                raise RuntimeError(f'operator {name} registered twice')
            REGISTRY[name] = Operator(fn, **kind)
        return fn
    return add


def same_size(node, size, axis):
    """The spatial rule of an operator that keeps its input's height and width."""
    return size


# ---------------------------------------------------------------- attributes and static inputs

def attr(node, name, default=None):
    return dict(node.attrs).get(name, default)


def attr_or_input(node, inputs, position, name, default=None):
    """An operand that one opset writes as attribute `name` and another as input `position` (Squeeze's
    axes, Slice's starts, Pad's pads, Clip's bounds, Split's sizes): the input where it is given."""
    if len(inputs) > position and inputs[position] is not None:
        value = np.asarray(inputs[position])
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    return attr(node, name, default)


def axis_of(axis, perm, ndim):
    """Where ONNX axis `axis` (negative counts from the end) lies in an array laid out by `perm`."""
    axis %= ndim
    return axis if perm is None else perm.index(axis)


def inverse(perm):
    return tuple(np.argsort(perm).tolist())


def compose(perm, transpose):
    """The layout of ``Transpose(perm=transpose)`` of a value laid out by `perm`, without moving its data."""
    perm = perm or tuple(range(len(transpose)))
    back = inverse(transpose)
    result = tuple(back[i] for i in perm)
    return None if result == tuple(range(len(result))) else result


def is_static(x):
    return isinstance(x, (np.ndarray, np.generic))


def xp(*arrays):
    """numpy where every operand is known while tracing (shape arithmetic stays static), else jax.numpy."""
    if all(is_static(a) for a in arrays if a is not None):
        return np
    import jax.numpy as jnp
    return jnp


# ---------------------------------------------------------------- applying an operator to laid-out values

class NotBucketable(ValueError):
    """An operator whose result inside a padded bucket would differ from the exact size's."""


def materialize(value, keep_image=False):
    """The array of a Laid value in ONNX's own order."""
    if value.perm is None:
        return value.array
    if keep_image and value.image:
        raise NotBucketable('an image moved out of its layout')
    import jax.numpy as jnp
    return jnp.transpose(value.array, inverse(value.perm))


def laid_as(value, perm, keep_image=False):
    """The array of `value` laid out by `perm`, broadcasting a lower-rank ONNX value as ONNX does (from the
    right) against the rank of `perm`."""
    if value.perm == perm:
        return value.array
    x = materialize(value, keep_image)
    if np.ndim(x) == 0 or perm is None:
        return x
    if np.ndim(x) < len(perm):
        x = np.reshape(x, (1,) * (len(perm) - np.ndim(x)) + np.shape(x)) if is_static(x) else \
            x.reshape((1,) * (len(perm) - x.ndim) + x.shape)
    if keep_image and value.image:
        raise NotBucketable('an image moved out of its layout')
    return np.transpose(x, perm) if is_static(x) else x.transpose(perm)


def apply(node, inputs, keep_images=False, extent=None):
    """Outputs of `node` (Laid values) for its inputs (Laid values, None for absent ones), laid out as its
    operator needs them. `keep_images`: inside a padded bucket, where an image may not be moved; `extent`
    its true size, for an operator that reads it (Operator.extent)."""
    op = REGISTRY.get(node.op)
    if op is None:
        raise Unsupported(f'operator {node.op} (node {node.name or node.output!r}) is not supported')
    data = [i for i in range(len(inputs)) if i not in op.static and inputs[i] is not None]
    args = [None] * len(inputs)
    for i in op.static:
        if i < len(inputs) and inputs[i] is not None:
            value = inputs[i].array
            if not is_static(value):
                import jax
                if isinstance(value, jax.core.Tracer):
                    raise Unsupported(f'{node}: its input {i + 1} is computed from the image, and must be known '
                                      f'before it (a shape, axes, pads or scales)')
                value = np.asarray(materialize(inputs[i]))        # a concrete array (graph.run, eager)
            args[i] = value
    perm = None
    if op.layout == 'transpose':
        value = inputs[0]
        if is_static(value.array):
            return (Laid(op.fn(node, value.array)),)
        return (Laid(value.array, compose(value.perm, attr(node, 'perm', tuple(reversed(range(value.array.ndim))))),
                     value.image),)
    if op.layout == 'spatial':
        if np.ndim(inputs[0].array) != 4:
            raise Unsupported(f'{node}: only images (4-D tensors) are supported, not {np.ndim(inputs[0].array)}-D')
        perm = NHWC
        args[0] = laid_as(inputs[0], NHWC, keep_images)
        for i in data[1:]:
            args[i] = materialize(inputs[i])
    elif op.layout in ('pointwise', 'axes'):
        permuted = [inputs[i] for i in data if inputs[i].perm is not None]
        if permuted:
            perm = permuted[0].perm
        for i in data:
            args[i] = laid_as(inputs[i], perm, keep_images)
    else:
        for i in data:
            args[i] = materialize(inputs[i], keep_images)
    extra = {'perm': perm} if op.layout == 'axes' else {}
    if op.extent and extent is not None:
        extra['extent'] = extent
    try:
        out = op.fn(node, *args, **extra)
    except (Unsupported, NotBucketable):
        raise
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as e:
        reason = ' '.join(str(e).split()) or type(e).__name__
        raise Unsupported(f'{node}: {reason}') from None
    outs = out if isinstance(out, tuple) and not isinstance(out, Laid) else (out,)
    return tuple(o if isinstance(o, Laid) else Laid(o, perm if np.ndim(o) == len(perm or ()) else None)
                 for o in outs)
