"""The reference: the 2015 dream.ipynb cells on real Caffe, as they were, for `make bench`.

The notebook's functions below differ from its cells only in Python-3 syntax (xrange -> range) and in
leaving out the per-step IPython display (showarray, print, clear_output), which is no part of the
computation. Run with Debian's python3 and PYTHONPATH at the pycaffe that `make reference` built:

    notebook_caffe.py MODEL_DIR IMG OUT_DIR

It times one `deepdream(net, img)` after `np.random.seed(0)`, then makes one `make_step` on the
full-size image after `np.random.seed(0)` (the same jitter shift classicdream gets for that seed),
and writes OUT_DIR/caffe.json and OUT_DIR/caffe_step.npy.
"""
import json
import os
import resource
import sys
import time

import numpy as np
import scipy.ndimage as nd
import PIL.Image
from google.protobuf import text_format

import caffe


def load_net(model_path, tmp):
    """The notebook's cell: bvlc_googlenet with force_backward, as a Classifier (its tmp.prototxt at `tmp`)."""
    net_fn = model_path + '/deploy.prototxt'
    param_fn = model_path + '/bvlc_googlenet.caffemodel'
    model = caffe.io.caffe_pb2.NetParameter()
    text_format.Merge(open(net_fn).read(), model)
    model.force_backward = True
    open(tmp, 'w').write(str(model))
    return caffe.Classifier(tmp, param_fn,
                            mean=np.float32([104.0, 116.0, 122.0]),   # ImageNet mean, training set dependent
                            channel_swap=(2, 1, 0))                    # the reference model has channels in BGR order


# a couple of utility functions for converting to and from Caffe's input image layout
def preprocess(net, img):
    return np.float32(np.rollaxis(img, 2)[::-1]) - net.transformer.mean['data']


def deprocess(net, img):
    return np.dstack((img + net.transformer.mean['data'])[::-1])


def objective_L2(dst):
    dst.diff[:] = dst.data


def make_step(net, step_size=1.5, end='inception_4c/output',
              jitter=32, clip=True, objective=objective_L2):
    '''Basic gradient ascent step.'''

    src = net.blobs['data']  # input image is stored in Net's 'data' blob
    dst = net.blobs[end]

    ox, oy = np.random.randint(-jitter, jitter + 1, 2)
    src.data[0] = np.roll(np.roll(src.data[0], ox, -1), oy, -2)  # apply jitter shift

    net.forward(end=end)
    objective(dst)  # specify the optimization objective
    net.backward(start=end)
    g = src.diff[0]
    # apply normalized ascent step to the input image
    src.data[:] += step_size / np.abs(g).mean() * g

    src.data[0] = np.roll(np.roll(src.data[0], -ox, -1), -oy, -2)  # unshift image

    if clip:
        bias = net.transformer.mean['data']
        src.data[:] = np.clip(src.data, -bias, 255 - bias)


def deepdream(net, base_img, iter_n=10, octave_n=4, octave_scale=1.4,
              end='inception_4c/output', clip=True, **step_params):
    # prepare base images for all octaves
    octaves = [preprocess(net, base_img)]
    for i in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1))

    src = net.blobs['data']
    detail = np.zeros_like(octaves[-1])  # allocate image for network-produced details
    for octave, octave_base in enumerate(octaves[::-1]):
        h, w = octave_base.shape[-2:]
        if octave > 0:
            # upscale details from the previous octave
            h1, w1 = detail.shape[-2:]
            detail = nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1)

        src.reshape(1, 3, h, w)  # resize the network's input image size
        src.data[0] = octave_base + detail
        for i in range(iter_n):
            make_step(net, end=end, clip=clip, **step_params)

        # extract details produced on the current octave
        detail = src.data[0] - octave_base
    # returning the resulting image
    return deprocess(net, src.data[0])


def one_step(net, img):
    """One seeded make_step on the full-size image, on a net whose diffs are zero (a fresh net's state)."""
    for blob in net.blobs.values():
        blob.diff[...] = 0
    src = net.blobs['data']
    src.reshape(1, 3, *img.shape[:2])
    src.data[0] = preprocess(net, img)
    np.random.seed(0)
    make_step(net)
    return src.data[0].copy()


if __name__ == '__main__':
    model_dir, img_path, out_dir = sys.argv[1:4]
    caffe.set_mode_cpu()
    net = load_net(model_dir, os.path.join(out_dir, 'tmp.prototxt'))
    img = np.float32(PIL.Image.open(img_path))
    np.random.seed(0)
    start = time.perf_counter()
    deepdream(net, img)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(os.path.join(out_dir, 'caffe_step.npy'), one_step(net, img))
    with open(os.path.join(out_dir, 'caffe.json'), 'w') as f:
        json.dump({'seconds': seconds, 'peak_rss': peak}, f)
