"""Objectives beyond the notebook, each checked against an independent computation on the real net:
jax.grad of the graph's own output, the linearity of backprop, and what the dream does to the net."""
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import classicdream
from classicdream import deepdream, load_image, preprocess
from classicdream.graph import evaluate
from classicdream.objectives import CLASS_END, class_weights, find_class, noise_image, objective_channel, \
    objective_class, objective_weighted, synset_words
from conftest import relative_error

LADYBUG = 301


@pytest.fixture(scope='module')
def flowers224(shared):
    img = Image.open(shared / 'images' / 'flowers.jpg').convert('RGB').resize((224, 224), Image.BILINEAR)
    return preprocess(np.float32(img))[None]


def autodiff(net, data, end, score):
    """d score(forward(data, end)) / d data by jax.grad through the whole graph: the independent reference."""
    tensor = net.tensor(end)
    return np.asarray(jax.grad(lambda x: score(evaluate(net.nodes, net.params, x, tensor)))(jnp.asarray(data)))


def test_class_score_is_loss3_classifier_where_caffe_defines_it(net, flowers224):
    """w·mean(inception_5b) + b is exactly loss3/classifier at 224x224, and its gradient is that logit's."""
    features = net.forward(flowers224, CLASS_END).mean(axis=(2, 3))[0]
    bias = net.params['loss3/classifier.bias']
    logits = net.forward(flowers224, 'loss3/classifier')[0]
    assert np.allclose(np.asarray(class_weights(net)) @ features + bias, logits, rtol=1e-5, atol=1e-4)
    ours = net.gradient(flowers224, CLASS_END, objective_class(net, LADYBUG))
    theirs = autodiff(net, flowers224, 'loss3/classifier', lambda z: z[0, LADYBUG])
    assert relative_error(ours, theirs) < 1e-5


def test_class_visualisation_makes_the_net_see_the_class(net):
    """From noise, a short class dream makes a ladybug the net's top-1, its logit far above the start's."""
    rng = np.random.RandomState(0)
    start = noise_image(224, 224, rng)
    result = deepdream(net, start, iter_n=5, octave_n=2, end=CLASS_END, objective=objective_class(net, LADYBUG),
                       seed=rng)
    before = net.forward(preprocess(start)[None], 'loss3/classifier')[0]
    after = net.forward(preprocess(np.clip(result, 0, 255))[None], 'loss3/classifier')[0]
    assert after.argmax() == LADYBUG and before.argmax() != LADYBUG
    assert after[LADYBUG] - before[LADYBUG] > 10


def test_channel_objective_is_the_gradient_of_the_channels_sum(net, flowers224):
    end, channels = 'inception_4c/output', [42, 7]
    ours = net.gradient(flowers224, end, objective_channel(channels))
    theirs = autodiff(net, flowers224, end, lambda a: a[:, channels].sum())
    assert relative_error(ours, theirs) < 1e-5


def test_channel_dream_raises_that_channel_most(net, shared):
    """Dreaming one channel lifts it far more than the layer as a whole is lifted, and more than L2 does."""
    img = load_image(shared / 'images' / 'flowers.jpg')
    end, channel = 'inception_4c/output', 42

    def channel_means(dream):
        return net.forward(preprocess(dream)[None], end)[0].mean(axis=(1, 2))
    base = channel_means(img)
    aimed = channel_means(deepdream(net, img, iter_n=3, octave_n=1, end=end, objective=objective_channel([channel])))
    plain = channel_means(deepdream(net, img, iter_n=3, octave_n=1, end=end))
    gain = aimed - base
    assert gain[channel] > 5 * np.median(np.abs(gain))
    assert gain[channel] > 2 * (plain[channel] - base[channel])


def test_weighted_layers_objective_is_the_weighted_sum_of_single_layer_gradients(net, flowers224):
    ends, weights = ('inception_4c/output', 'inception_3b/output'), (1.0, 0.5)
    ours = net.gradient(flowers224, ends, objective_weighted(weights))
    theirs = net.gradient(flowers224, ends[0]) + 0.5 * net.gradient(flowers224, ends[1])
    assert relative_error(ours, theirs) < 1e-5
    assert net.min_size(ends) == tuple(max(a, b) for a, b in zip(net.min_size(ends[0]), net.min_size(ends[1])))


def test_synset_words_is_caffes_file_and_names_resolve(shared):
    ours = Path(classicdream.__file__).parent / 'synset_words.txt'
    digest = hashlib.sha256(ours.read_bytes()).hexdigest()
    assert f'{digest}  synset_words.txt' in (shared / 'models' / 'SHA256SUMS').read_text()
    synsets = synset_words()
    assert len(synsets) == 1000 and synsets[LADYBUG][0] == 'n02165456'
    assert find_class('ladybug') == find_class('Ladybird') == find_class('n02165456') == find_class('301') == LADYBUG
    assert find_class(LADYBUG) == LADYBUG


@pytest.mark.parametrize('spec, words', [
    ('terrier', ['ambiguous', 'Yorkshire terrier']),
    ('ladybugg', ['no ImageNet class', 'ladybug']),
    ('1000', ['out of range']),
])
def test_bad_class_names_say_what_would_do(spec, words):
    with pytest.raises(ValueError) as e:
        find_class(spec)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_noise_is_seeded_mid_grey_and_the_stream_goes_on(net):
    a, b = noise_image(32, 48, np.random.RandomState(5)), noise_image(32, 48, np.random.RandomState(5))
    assert a.shape == (32, 48, 3) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 100 <= a.min() and a.max() < 101 and abs(a.mean() - 100.5) < 0.01
    assert not np.array_equal(a, noise_image(32, 48, np.random.RandomState(6)))
