"""BVLC's example notebooks 00-classification, net_surgery and detection, cell by cell, on a generated
Caffe-like tree (tests/tutorial_data.py: a miniature CaffeNet under CaffeNet's names, its weights,
a mean .npy, synset_words.txt, images). Only the import lines are changed (`import netspec as
caffe`), plus what the miniature needs: its input is 35×35 (not 227×227), plots are left out, Python
2's print statements are calls. Each notebook's results are checked against the library driven by
hand or an independent numpy computation.
"""
import csv

import numpy as np
import pytest
from tutorial_data import SIDE, caffe_tree, mini_caffenet

import netspec as caffe


@pytest.fixture(scope="module")
def caffe_root(tmp_path_factory):
    return str(caffe_tree(tmp_path_factory.mktemp("caffe"))) + "/"


def vis_square(data):
    """The notebook's filter tiling, without the plt.imshow at its end."""
    data = (data - data.min()) / (data.max() - data.min())
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = (((0, n ** 2 - data.shape[0]), (0, 1), (0, 1)) + ((0, 0),) * (data.ndim - 3))
    data = np.pad(data, padding, mode='constant', constant_values=1)
    data = data.reshape((n, n) + data.shape[1:]).transpose((0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    return data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])


def test_00_classification(caffe_root):
    caffe.set_mode_cpu()
    model_def = caffe_root + 'models/bvlc_reference_caffenet/deploy.prototxt'
    model_weights = caffe_root + 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel'
    net = caffe.Net(model_def, model_weights, caffe.TEST)

    mu = np.load(caffe_root + 'python/caffe/imagenet/ilsvrc_2012_mean.npy')
    mu = mu.mean(1).mean(1)
    transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_mean('data', mu)
    transformer.set_raw_scale('data', 255)
    transformer.set_channel_swap('data', (2, 1, 0))
    net.blobs['data'].reshape(50, 3, SIDE, SIDE)

    image = caffe.io.load_image(caffe_root + 'examples/images/cat.jpg')
    transformed_image = transformer.preprocess('data', image)
    net.blobs['data'].data[...] = transformed_image
    output = net.forward()
    output_prob = output['prob'][0]

    labels = np.loadtxt(caffe_root + 'data/ilsvrc12/synset_words.txt', str, delimiter='\t')
    top_inds = output_prob.argsort()[::-1][:5]
    top5 = list(zip(output_prob[top_inds], labels[top_inds]))
    shapes = [(name, blob.data.shape) for name, blob in net.blobs.items()]
    params = [(name, p[0].data.shape, p[1].data.shape) for name, p in net.params.items()]
    tiles = vis_square(net.params['conv1'][0].data.transpose(0, 2, 3, 1))
    feat = vis_square(net.blobs['conv1'].data[0, :36])

    # by hand: resize, RGB -> BGR, ×255, minus the mean pixel, one image through a fresh net
    x = caffe.io.resize_image(image, (SIDE, SIDE)).transpose(2, 0, 1)[::-1] * 255 - mu[:, None, None]
    ref_net = caffe.Net(model_def, model_weights, caffe.TEST)
    ref_net.blobs['data'].reshape(1, 3, SIDE, SIDE)
    ref_net.blobs['data'].data[0] = x
    ref = ref_net.forward()['prob'][0]
    np.testing.assert_allclose(output_prob, ref, rtol=1e-5)
    assert np.all(output['prob'] == output['prob'][0])  # the one image was copied to all 50
    assert [int(np.argmax(ref))] == [int(top_inds[0])]
    assert [label for _, label in top5] == [f"n{k:08d} class {k}, label {k}" for k in np.argsort(-ref)[:5]]
    assert shapes[0] == ('data', (50, 3, SIDE, SIDE)) and shapes[-1] == ('prob', (50, 10))
    assert params[0] == ('conv1', (8, 3, 5, 5), (8,)) and len(params) == 8
    assert tiles.shape == (3 * 6, 3 * 6, 3) and feat.shape == (3 * 17, 3 * 17)


def test_net_surgery(caffe_root, tmp_path, monkeypatch):
    from pathlib import Path
    examples = Path(caffe_root) / 'examples'
    (examples / 'net_surgery').mkdir(exist_ok=True)
    (examples / 'net_surgery' / 'conv.prototxt').write_bytes(
        (Path(__file__).parent / 'data' / 'bvlc' / 'net_surgery' / 'conv.prototxt').read_bytes())
    (examples / 'net_surgery' / 'bvlc_caffenet_full_conv.prototxt').write_text(mini_caffenet(1, full_conv=True))
    monkeypatch.chdir(examples)

    caffe.set_mode_cpu()
    net = caffe.Net('net_surgery/conv.prototxt', caffe.TEST)
    assert list(net.blobs.keys()) == ['data', 'conv'] and list(net.params.keys()) == ['conv']
    im = np.array(caffe.io.load_image('images/cat_gray.jpg', color=False)).squeeze()
    im_input = im[np.newaxis, np.newaxis, :, :]
    net.blobs['data'].reshape(*im_input.shape)
    net.blobs['data'].data[...] = im_input
    net.forward()

    conv0 = net.blobs['conv'].data[0, 0]
    pre = conv0.mean()
    net.params['conv'][1].data[0] = 1.
    net.forward()
    assert conv0.mean() == pytest.approx(pre + 1, abs=1e-5)  # the same array holds the new output

    ksize = net.params['conv'][0].data.shape[2:]
    sigma = 1.
    y, x = np.mgrid[-ksize[0]//2 + 1:ksize[0]//2 + 1, -ksize[1]//2 + 1:ksize[1]//2 + 1]
    g = np.exp(-((x**2 + y**2)/(2.0*sigma**2)))
    gaussian = (g / g.sum()).astype(np.float32)
    net.params['conv'][0].data[0] = gaussian
    net.params['conv'][0].data[1:] = 0.
    sobel = np.array((-1, -2, -1, 0, 0, 0, 1, 2, 1), dtype=np.float32).reshape((3, 3))
    net.params['conv'][0].data[1, 0, 1:-1, 1:-1] = sobel
    net.params['conv'][0].data[2, 0, 1:-1, 1:-1] = sobel.T
    net.forward()
    # the filters by hand: a valid cross-correlation, biases 1, 0, 0
    win = np.lib.stride_tricks.sliding_window_view(im.astype(np.float64), (5, 5))
    w = net.params['conv'][0].data[:, 0].astype(np.float64)
    ref = np.einsum('ijkl,fkl->fij', win, w) + np.array([1.0, 0, 0])[:, None, None]
    np.testing.assert_allclose(net.blobs['conv'].data[0], ref, rtol=1e-4, atol=1e-5)

    # transplant the fully connected layers into convolutions, as the notebook does
    net = caffe.Net('../models/bvlc_reference_caffenet/deploy.prototxt',
                    '../models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel', caffe.TEST)
    params = ['fc6', 'fc7', 'fc8']
    fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
    net_full_conv = caffe.Net('net_surgery/bvlc_caffenet_full_conv.prototxt',
                              '../models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel', caffe.TEST)
    params_full_conv = ['fc6-conv', 'fc7-conv', 'fc8-conv']
    conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
                   for pr in params_full_conv}
    for pr, pr_conv in zip(params, params_full_conv):
        conv_params[pr_conv][0].flat = fc_params[pr][0].flat
        conv_params[pr_conv][1][...] = fc_params[pr][1]
    net_full_conv.save('net_surgery/bvlc_caffenet_full_conv.caffemodel')

    im = caffe.io.load_image('images/cat.jpg')
    transformer = caffe.io.Transformer({'data': net_full_conv.blobs['data'].data.shape})
    transformer.set_mean('data', np.load('../python/caffe/imagenet/ilsvrc_2012_mean.npy').mean(1).mean(1))
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_channel_swap('data', (2, 1, 0))
    transformer.set_raw_scale('data', 255.0)
    out = net_full_conv.forward_all(data=np.asarray([transformer.preprocess('data', im)]))
    assert out['prob'][0].argmax(axis=0).shape == (1, 1)
    back = transformer.deprocess('data', net_full_conv.blobs['data'].data[0])
    np.testing.assert_allclose(back, caffe.io.resize_image(im, (SIDE, SIDE)), atol=1e-5)

    # the saved fully convolutional net gives the fully connected net's probabilities
    reloaded = caffe.Net('net_surgery/bvlc_caffenet_full_conv.prototxt',
                         'net_surgery/bvlc_caffenet_full_conv.caffemodel', caffe.TEST)
    net.blobs['data'].reshape(1, 3, SIDE, SIDE)
    x = transformer.preprocess('data', im)
    fc_prob = net.forward_all(data=x[None])['prob'][0]
    conv_prob = reloaded.forward_all(data=x[None])['prob'][0, :, 0, 0]
    np.testing.assert_allclose(conv_prob, fc_prob, rtol=1e-5)
    np.testing.assert_allclose(out['prob'][0, :, 0, 0], fc_prob, rtol=1e-5)


def nms_detections(dets, overlap=0.3):
    """The notebook's greedy non-maximum suppression (rows: xmin, ymin, xmax, ymax, score)."""
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    ind = np.argsort(dets[:, 4])
    area = ((x2 - x1) * (y2 - y1)).astype(float)
    pick = []
    while len(ind) > 0:
        i = ind[-1]
        pick.append(i)
        ind = ind[:-1]
        w = np.maximum(0., np.minimum(x2[i], x2[ind]) - np.maximum(x1[i], x1[ind]))
        h = np.maximum(0., np.minimum(y2[i], y2[ind]) - np.maximum(y1[i], y1[ind]))
        o = w * h / (area[i] + area[ind] - w * h)
        ind = ind[np.nonzero(o <= overlap)[0]]
    return dets[pick, :]


def test_detection(caffe_root, tmp_path, monkeypatch, capsys):
    """detect.py on a few windows (the list crop mode; Selective Search is a MATLAB tool), then the
    notebook's analysis of the output, read with h5py instead of pandas."""
    import h5py

    from netspec.cli import main
    monkeypatch.chdir(caffe_root + 'examples')
    image = caffe_root + 'examples/images/fish-bike.jpg'
    windows = [(0, 0, 30, 40), (10, 20, 50, 70), (12, 22, 52, 72), (5, 5, 59, 79), (30, 40, 60, 80)]
    with open(tmp_path / 'det_input.csv', 'w') as f:
        csv.writer(f).writerows([('filename', 'xmin', 'ymin', 'xmax', 'ymax')] +
                                [(image, x0, y0, x1, y1) for y0, x0, y1, x1 in windows])
    rc = main(['detect', '--crop_mode=list', '--pretrained_model=../models/bvlc_reference_caffenet/'
               'bvlc_reference_caffenet.caffemodel', '--model_def=../models/bvlc_reference_caffenet/deploy.prototxt',
               '--raw_scale=255', '--mean_file=', '--context_pad=2', str(tmp_path / 'det_input.csv'),
               str(tmp_path / 'det_output.h5')])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(tmp_path / 'det_output.h5') as f:
        predictions, found = f['prediction'][()], f['window'][()]
    assert predictions.shape == (5, 10) and [tuple(w) for w in found] == windows

    det = caffe.Detector(caffe_root + 'models/bvlc_reference_caffenet/deploy.prototxt',
                         caffe_root + 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel',
                         raw_scale=255, channel_swap=[2, 1, 0], context_pad=2)
    ref = det.detect_windows([(image, [np.array(w) for w in windows])])
    np.testing.assert_allclose(predictions, [d['prediction'] for d in ref], rtol=1e-6)

    scores = predictions[:, 3]
    dets = np.hstack((found[:, [1, 0, 3, 2]], scores[:, np.newaxis]))
    nms_dets = nms_detections(dets)
    assert nms_dets[0, 4] == scores.max()

    def iou(a, b):
        w = max(0., min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0., min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)
    kept = [tuple(d) for d in nms_dets]
    assert all(iou(a, b) <= 0.3 for a in kept for b in kept if a != b)
    for d in map(tuple, dets):  # a dropped window overlaps a better kept one by more than 0.3
        assert d in kept or any(iou(d, k) > 0.3 and k[4] >= d[4] for k in kept)
    assert len(kept) < len(dets)
