"""BVLC's notebook pascal-multilabel-with-datalayer, cell by cell: a Python data layer feeding a
CaffeNet with a SigmoidCrossEntropyLoss for multi-label classification, trained with SGDSolver from
copied weights, its test net sharing the train net's weights, scored by Hamming distance.

The data layer is this test's own (written against caffe.Layer as the notebook's
pascal_multilabel_datalayers.py is, same param_str dict), over a generated PASCAL-like folder;
the CaffeNet is the miniature of tests/tutorial_data.py; only import lines otherwise change.
"""
import os.path as osp
import textwrap

import cv2
import numpy as np
import pytest
from tutorial_data import SIDE, caffe_tree, smooth_image

import netspec as caffe
from netspec import layers as L
from netspec import params as P

CLASSES = 20
MEAN = np.array([104.0, 117.0, 123.0], np.float32)  # BGR, as the notebook's SimpleTransformer

DATA_LAYER = '''
"""A multi-label data layer: param_str is a dict (batch_size, im_shape, split, pascal_root)."""
import cv2
import numpy as np

import netspec as caffe

MEAN = np.array([104.0, 117.0, 123.0], np.float32)


class PascalMultilabelDataLayerSync(caffe.Layer):
    def setup(self, bottom, top):
        params = eval(self.param_str)
        self.batch_size, self.im_shape = params['batch_size'], params['im_shape']
        root = params['pascal_root']
        ids = open(f"{root}/ImageSets/Main/{params['split']}.txt").read().split()
        labels = dict(line.split(None, 1) for line in open(f"{root}/labels.txt").read().splitlines())
        self.items = [(f"{root}/JPEGImages/{i}.jpg", np.array(labels[i].split(), np.float32)) for i in ids]
        self.cursor = 0
        top[0].reshape(self.batch_size, 3, *self.im_shape)
        top[1].reshape(self.batch_size, 20)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for k in range(self.batch_size):
            path, label = self.items[self.cursor]
            im = cv2.resize(cv2.imread(path), tuple(self.im_shape[::-1])).astype(np.float32) - MEAN
            top[0].data[k, ...] = im.transpose(2, 0, 1)
            top[1].data[k, ...] = label
            self.cursor = (self.cursor + 1) % len(self.items)

    def backward(self, top, propagate_down, bottom):
        pass
'''


def pascal_tree(root):
    """JPEGImages, ImageSets/Main/{train,val}.txt and labels.txt (image id, 20 multi-hot labels)."""
    rng = np.random.default_rng(4)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    labels = {}
    for i in range(12):
        cv2.imwrite(str(root / "JPEGImages" / f"{i:06d}.jpg"), smooth_image(44, 50, 200 + i))
        labels[f"{i:06d}"] = (rng.random(CLASSES) < 0.2).astype(int)
    (root / "labels.txt").write_text("".join(f"{k} {' '.join(map(str, v))}\n" for k, v in labels.items()))
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i:06d}\n" for i in range(8)))
    (root / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i:06d}\n" for i in range(8, 12)))
    return labels


def test_pascal_multilabel_with_datalayer(tmp_path, monkeypatch):
    caffe_root = str(caffe_tree(tmp_path / "caffe")) + "/"
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "pascal_multilabel_datalayers.py").write_text(textwrap.dedent(DATA_LAYER))
    monkeypatch.syspath_prepend(str(tmp_path / "layers"))
    monkeypatch.chdir(tmp_path)
    pascal_root = osp.join(caffe_root, 'data/pascal/VOC2012')
    truth = pascal_tree(tmp_path / "caffe" / "data" / "pascal" / "VOC2012")
    caffe.set_mode_cpu()

    def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1):
        conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group)
        return conv, L.ReLU(conv, in_place=True)

    def fc_relu(bottom, nout):
        fc = L.InnerProduct(bottom, num_output=nout)
        return fc, L.ReLU(fc, in_place=True)

    def max_pool(bottom, ks, stride=1):
        return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)

    def caffenet_multilabel(data_layer_params, datalayer):
        n = caffe.NetSpec()
        n.data, n.label = L.Python(module='pascal_multilabel_datalayers', layer=datalayer,
                                   ntop=2, param_str=str(data_layer_params))
        n.conv1, n.relu1 = conv_relu(n.data, 5, 8, stride=2)
        n.pool1 = max_pool(n.relu1, 3, stride=2)
        n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
        n.conv2, n.relu2 = conv_relu(n.norm1, 3, 8, pad=1, group=2)
        n.pool2 = max_pool(n.relu2, 3, stride=2)
        n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
        n.conv3, n.relu3 = conv_relu(n.norm2, 3, 8, pad=1)
        n.conv4, n.relu4 = conv_relu(n.relu3, 3, 8, pad=1, group=2)
        n.conv5, n.relu5 = conv_relu(n.relu4, 3, 8, pad=1, group=2)
        n.pool5 = max_pool(n.relu5, 3, stride=2)
        n.fc6, n.relu6 = fc_relu(n.pool5, 16)
        n.drop6 = L.Dropout(n.relu6, in_place=True)
        n.fc7, n.relu7 = fc_relu(n.drop6, 16)
        n.drop7 = L.Dropout(n.relu7, in_place=True)
        n.score = L.InnerProduct(n.drop7, num_output=20)
        n.loss = L.SigmoidCrossEntropyLoss(n.score, n.label)
        return str(n.to_proto())

    workdir = './pascal_multilabel_with_datalayer'
    (tmp_path / workdir).mkdir()
    # tools.CaffeSolver's file, with the notebook's display and base_lr
    with open(osp.join(workdir, 'solver.prototxt'), 'w') as f:
        f.write(f'train_net: "{osp.join(workdir, "trainnet.prototxt")}"\ntest_net: "{osp.join(workdir, "valnet.prototxt")}"\n'
                'test_iter: 1\ntest_interval: 1000\nbase_lr: 0.0001\nmomentum: 0.9\nweight_decay: 0.0005\n'
                'lr_policy: "fixed"\ndisplay: 1\nmax_iter: 100000\nsnapshot: 0\n')
    with open(osp.join(workdir, 'trainnet.prototxt'), 'w') as f:
        data_layer_params = dict(batch_size=4, im_shape=[SIDE, SIDE], split='train', pascal_root=pascal_root)
        f.write(caffenet_multilabel(data_layer_params, 'PascalMultilabelDataLayerSync'))
    with open(osp.join(workdir, 'valnet.prototxt'), 'w') as f:
        data_layer_params = dict(batch_size=4, im_shape=[SIDE, SIDE], split='val', pascal_root=pascal_root)
        f.write(caffenet_multilabel(data_layer_params, 'PascalMultilabelDataLayerSync'))

    solver = caffe.SGDSolver(osp.join(workdir, 'solver.prototxt'))
    solver.net.copy_from(caffe_root + 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel')
    solver.test_nets[0].share_with(solver.net)
    reference = caffe.Net(caffe_root + 'models/bvlc_reference_caffenet/deploy.prototxt',
                          caffe_root + 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel', caffe.TEST)
    np.testing.assert_array_equal(solver.net.params['fc7'][0].data, reference.params['fc7'][0].data)
    score_before = solver.net.params['score'][0].data.copy()
    solver.step(1)

    # the Python layer's tops: the first training image, resized, mean-subtracted, CHW; its labels
    im = cv2.resize(cv2.imread(osp.join(pascal_root, 'JPEGImages/000000.jpg')), (SIDE, SIDE)).astype(np.float32)
    np.testing.assert_allclose(solver.net.blobs['data'].data[0], (im - MEAN).transpose(2, 0, 1), atol=1e-4)
    np.testing.assert_array_equal(solver.net.blobs['label'].data[:4], [truth[f"{i:06d}"] for i in range(4)])
    gtlist = solver.net.blobs['label'].data[0, ...].astype(int)
    assert list(np.where(gtlist)[0]) == list(np.flatnonzero(truth["000000"]))
    assert np.isfinite(solver.net.blobs['loss'].data) and solver.net.blobs['loss'].data > 0
    assert np.abs(solver.net.params['score'][0].data - score_before).max() > 0
    # share_with: the test net reads the very weights the solver just updated
    np.testing.assert_array_equal(solver.test_nets[0].params['score'][0].data, solver.net.params['score'][0].data)

    def hamming_distance(gt, est):
        return sum([1 for (g, e) in zip(gt, est) if g == e]) / float(len(gt))

    def check_accuracy(net, num_batches, batch_size=128):
        acc = 0.0
        for t in range(num_batches):
            net.forward()
            gts = net.blobs['label'].data
            ests = net.blobs['score'].data > 0
            for gt, est in zip(gts, ests):
                acc += hamming_distance(gt, est)
        return acc / (num_batches * batch_size)

    def check_baseline_accuracy(net, num_batches, batch_size=128):
        acc = 0.0
        for t in range(num_batches):
            net.forward()
            gts = net.blobs['label'].data
            ests = np.zeros((batch_size, len(gts)))
            for gt, est in zip(gts, ests):
                acc += hamming_distance(gt, est)
        return acc / (num_batches * batch_size)

    solver.step(2)
    test_net = solver.test_nets[0]
    acc = check_accuracy(test_net, 1, batch_size=4)
    by_hand = np.mean(test_net.blobs['label'].data == (test_net.blobs['score'].data > 0))
    assert acc == pytest.approx(by_hand)
    # all-zero guesses on the val images 8..11; as written, zip(gt, est) stops at len(est) == 4 labels
    baseline = check_baseline_accuracy(test_net, 1, batch_size=4)
    val = np.array([truth[f"{i:06d}"] for i in range(8, 12)])
    assert baseline == pytest.approx(np.sum(val[:, :4] == 0) / CLASSES / 4)
