"""The 2015 notebook's dream in PyTorch eager: what a user would write instead, for `make bench`'s anchor rows.

The same weights (models/bvlc_googlenet.onnx's initializers, the mirror's float32 values) in bvlc_googlenet
up to the *layer* inception_4c/output (a concat, so its blob is what it looks like: graph.py's docstring),
written with torch.nn.functional as a PyTorch user would, keeping Caffe's semantics:
- max pooling rounds up: F.max_pool2d(ceil_mode=True) gives Caffe's size, ceil((H + 2p - k)/s) + 1, and
  also drops a last window that would start in the padding (Caffe only checks that when p > 0, torch
  always; with bvlc_googlenet's k >= s an unpadded last window never starts past the input, so the two
  rules agree). Windows are clipped to the input in both (torch pads with -inf); a tie's gradient goes
  to the first maximum in row-major order in both;
- LRN across 5 channels, x / (k + alpha/n * sum x^2)^beta: F.local_response_norm averages the squares
  over n (zero-padded), which is Caffe's alpha/n;
- ReLU in place, as Caffe's; convolutions are cross-correlations in both, weights in Caffe's (out, in, kH, kW).
tests/test_torch_bench.py checks each of these against real Caffe's blobs and gradients.

The loop is the notebook's deepdream/make_step (bench/notebook_caffe.py) with the net's blobs as torch
tensors: np.random.randint draws the jitter after np.random.seed, octaves and detail are resampled by
scipy.ndimage.zoom(order=1) on the host, the image is rolled, stepped and clipped on the device. float32,
channels_last (oneDNN's fast layout on a CPU), eager autograd, no autocast, TF32 off on a GPU.

`compile` runs the same loop with the net's forward wrapped in torch.compile, as a speed-minded PyTorch
user would: TorchInductor (COMPILE_MODE below), one static graph per octave size (dynamic=False: a dream
has 4 sizes, each traced once; shapes marked dynamic would make every later octave run generic kernels),
AOTAutograd compiling the backward that torch.autograd.grad runs. Where inductor keeps its compiled code
is TORCHINDUCTOR_CACHE_DIR (bench.py gives the first process an empty one).

Run as a worker by bench/bench.py (torch is imported by this process only):

    torch_dream.py MODEL.onnx IMG OUT_DIR cpu|cuda [eager|compile]

It times a first deepdream in this fresh process (one-time costs included: oneDNN's primitives for each
shape, CUDA's kernels and allocator, torch.compile's tracing and code generation), then two more (steady:
the better), one make_step on the full image with the seed-0 jitter shift, and writes
OUT_DIR/torch_DEVICE.json (torch_compile_DEVICE.json), _step.npy and _dream.npy.
"""
import json
import os
import resource
import sys
import time

import numpy as np
import scipy.ndimage as nd
import torch
import torch.nn.functional as F

MEAN = np.float32([104.0, 116.0, 122.0])[:, None, None]     # bvlc_googlenet's BGR mean, the notebook's
END = 'inception_4c/output'
INCEPTIONS = ('inception_3a', 'inception_3b', 'pool3/3x3_s2', 'inception_4a', 'inception_4b', 'inception_4c')
BRANCHES = ('1x1', '3x3_reduce', '3x3', '5x5_reduce', '5x5', 'pool_proj')
# torch.compile's mode for the bench: 'default'. 'max-autotune-no-cudagraphs' (which also times inductor's
# C++ GEMM templates) was slower steady on a 2-core EPYC: one 294x522 gradient, best of 5 interleaved with
# eager, 0.215 s against default's 0.193 s (eager 0.238 / 0.229 s); default's gradient equals eager's
# bit for bit, max-autotune's differs by up to 5e-4. TORCH_COMPILE_MODE overrides it.
COMPILE_MODE = os.environ.get('TORCH_COMPILE_MODE', 'default')


def load_weights(model):
    """{Caffe layer: (weight, bias)} as float32 numpy arrays, from the converted ONNX file's initializers."""
    import onnx
    from onnx import numpy_helper
    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    return {name[:-len('.weight')]: (w, arrays[name[:-len('.weight')] + '.bias'])
            for name, w in arrays.items() if name.endswith('.weight')}


class GoogLeNet:
    """bvlc_googlenet from `data` to the layer inception_4c/output, in torch.nn.functional."""

    def __init__(self, weights, device='cpu'):
        layers = ['conv1/7x7_s2', 'conv2/3x3_reduce', 'conv2/3x3'] + \
                 [f'{block}/{b}' for block in INCEPTIONS if block.startswith('inception') for b in BRANCHES]
        self.params = {name: (torch.tensor(weights[name][0], device=device)
                              .contiguous(memory_format=torch.channels_last),
                              torch.tensor(weights[name][1], device=device))
                       for name in layers}

    def conv(self, x, name, stride=1):
        """Convolution + its in-place ReLU; every padding in the net is kernel // 2."""
        w, b = self.params[name]
        return F.relu(F.conv2d(x, w, b, stride, w.shape[-1] // 2), inplace=True)

    def inception(self, x, block):
        c = lambda inp, branch: self.conv(inp, f'{block}/{branch}')
        pool = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        return torch.cat([c(x, '1x1'), c(c(x, '3x3_reduce'), '3x3'), c(c(x, '5x5_reduce'), '5x5'),
                          c(pool, 'pool_proj')], 1)

    def __call__(self, x):
        x = self.conv(x, 'conv1/7x7_s2', stride=2)
        x = lrn(F.max_pool2d(x, 3, 2, ceil_mode=True))                            # pool1/3x3_s2, pool1/norm1
        x = self.conv(self.conv(x, 'conv2/3x3_reduce'), 'conv2/3x3')
        x = F.max_pool2d(lrn(x), 3, 2, ceil_mode=True)                            # conv2/norm2, pool2/3x3_s2
        for block in INCEPTIONS:
            x = F.max_pool2d(x, 3, 2, ceil_mode=True) if block.startswith('pool') else self.inception(x, block)
        return x


def lrn(x):
    """Caffe's LRN layer of bvlc_googlenet: local_size 5, alpha 1e-4, beta 0.75, k 1, across channels."""
    return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)


# ---------------------------------------------------------------- the notebook's loop

def preprocess(img):
    return np.float32(np.rollaxis(img, 2)[::-1]) - MEAN


def deprocess(img):
    return np.dstack((img + MEAN)[::-1])


def gradient(net, src):
    """net.forward(end) + objective_L2 (dst.diff = dst.data) + net.backward(start=end): the input's diff."""
    x = src[None].contiguous(memory_format=torch.channels_last).requires_grad_()
    dst = net(x)
    g, = torch.autograd.grad(dst, x, grad_outputs=dst.detach())
    return g[0]


def make_step(net, src, step_size=1.5, jitter=32, clip=True):
    """The notebook's make_step on the (3, H, W) tensor `src`; returns the new src."""
    ox, oy = np.random.randint(-jitter, jitter + 1, 2)
    src = torch.roll(torch.roll(src, int(ox), -1), int(oy), -2)         # apply jitter shift
    g = gradient(net, src)
    src = src + step_size / g.abs().mean() * g                          # normalized ascent step
    src = torch.roll(torch.roll(src, -int(ox), -1), -int(oy), -2)       # unshift image
    if clip:
        bias = torch.from_numpy(MEAN).to(src.device)
        src = torch.clamp(src, -bias, 255 - bias)
    return src


def deepdream(net, base_img, iter_n=10, octave_n=4, octave_scale=1.4, clip=True, device='cpu', **step_params):
    """The notebook's deepdream() at inception_4c/output; call np.random.seed first, as the notebook did."""
    octaves = [preprocess(base_img)]
    for i in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1))
    detail = np.zeros_like(octaves[-1])
    for octave, octave_base in enumerate(octaves[::-1]):
        h, w = octave_base.shape[-2:]
        if octave > 0:
            h1, w1 = detail.shape[-2:]
            detail = nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1)
        src = torch.from_numpy(octave_base + detail).to(device)
        for i in range(iter_n):
            src = make_step(net, src, clip=clip, **step_params)
        detail = src.cpu().numpy() - octave_base
    return deprocess(src.cpu().numpy())


# ---------------------------------------------------------------- the bench worker

def settings(device):
    """fp32 as Caffe computes it, on every core: no TF32 on a GPU, torch's threads on all CPUs."""
    torch.set_num_threads(os.cpu_count())
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'torch {torch.__version__} sees no CUDA device')


def timed(net, img, device):
    np.random.seed(0)
    start = time.perf_counter()
    dream = deepdream(net, img, device=device)
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, dream


def compiled(net, mode=None):
    """The net with its forward compiled by TorchInductor: one static graph per input shape."""
    return torch.compile(net.__call__, backend='inductor', mode=mode or COMPILE_MODE, dynamic=False)


def main(model, img_path, out, device, how='eager'):
    from PIL import Image
    if how not in ('eager', 'compile'):
        raise SystemExit(f'torch_dream.py: eager or compile, not {how!r}')
    settings(device)
    net = GoogLeNet(load_weights(model), device)
    if how == 'compile':
        net = compiled(net)
    img = np.float32(Image.open(img_path))
    cold, cold_rss, dream = timed(net, img, device)
    steady, steady_rss, _ = min((timed(net, img, device) for _ in range(2)), key=lambda run: run[0])
    np.random.seed(0)                       # one make_step on the full image, the seed-0 shift, as Caffe's worker
    step = make_step(net, torch.from_numpy(preprocess(img)).to(device)).cpu().numpy()
    name = f'torch_{device}' if how == 'eager' else f'torch_compile_{device}'
    np.save(os.path.join(out, f'{name}_step.npy'), step)
    np.save(os.path.join(out, f'{name}_dream.npy'), dream)
    device_name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU'
    with open(os.path.join(out, f'{name}.json'), 'w') as f:
        json.dump({'cold': cold, 'cold_rss': cold_rss, 'steady': steady, 'steady_rss': steady_rss,
                   'version': torch.__version__, 'threads': torch.get_num_threads(), 'device': device_name,
                   'mode': COMPILE_MODE if how == 'compile' else None}, f)


if __name__ == '__main__':
    main(*sys.argv[1:6])
