"""BVLC's training notebooks, cell by cell, on small generated data: 01-learning-lenet (NetSpec LeNet
over an MNIST-like LMDB, SGDSolver, the notebook's own training loop, caffe_pb2 solver), 02-fine-tuning
(a miniature CaffeNet over ImageData, frozen and end-to-end fine-tuning from copied weights) and
brewing-logreg (HDF5Data logistic regression and a hidden layer, solve(), and `caffe train`); and
Caffe's examples/mnist run as `netspec train --solver=examples/mnist/lenet_solver.prototxt` from a
Caffe-like tree. Only import lines change (`import netspec as caffe`), plus Python 3 (print
calls, text-mode temp files, integer division) and sizes: fewer iterations, smaller nets and data.
"""
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tutorial_data import SIDE, caffe_tree, digit, smooth_image, write_mnist_lmdb

import netspec as caffe
from netspec import layers as L
from netspec import params as P
from netspec.proto import caffe_pb2

BVLC = Path(__file__).parent / "data" / "bvlc"


def use_device():
    """The notebooks' caffe.set_device(0); caffe.set_mode_gpu(), on the CPU where there is no GPU."""
    if torch.cuda.is_available():
        caffe.set_device(0)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()


def lenet(lmdb, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1./255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


@pytest.fixture
def mnist_examples(tmp_path, monkeypatch):
    """{caffe_root}/examples with mnist/mnist_{train,test}_lmdb, the working folder of the notebook."""
    mnist = tmp_path / "examples" / "mnist"
    mnist.mkdir(parents=True)
    write_mnist_lmdb(mnist / "mnist_train_lmdb", 256, seed=0)
    write_mnist_lmdb(mnist / "mnist_test_lmdb", 100, seed=1)
    monkeypatch.chdir(tmp_path / "examples")
    return tmp_path


def test_01_learning_lenet(mnist_examples):
    (Path("mnist") / "lenet_auto_solver.prototxt").write_bytes((BVLC / "mnist" / "lenet_auto_solver.prototxt").read_bytes())
    with open('mnist/lenet_auto_train.prototxt', 'w') as f:
        f.write(str(lenet('mnist/mnist_train_lmdb', 64)))
    with open('mnist/lenet_auto_test.prototxt', 'w') as f:
        f.write(str(lenet('mnist/mnist_test_lmdb', 100)))
    caffe.set_random_seed(1)     # a few SGD steps from a random start: the thresholds below want one start
    use_device()
    solver = None
    solver = caffe.SGDSolver('mnist/lenet_auto_solver.prototxt')
    assert [(k, v.data.shape) for k, v in solver.net.blobs.items()] == [
        ('data', (64, 1, 28, 28)), ('label', (64,)), ('conv1', (64, 20, 24, 24)), ('pool1', (64, 20, 12, 12)),
        ('conv2', (64, 50, 8, 8)), ('pool2', (64, 50, 4, 4)), ('fc1', (64, 500)), ('score', (64, 10)),
        ('loss', ())]
    assert [(k, v[0].data.shape) for k, v in solver.net.params.items()] == [
        ('conv1', (20, 1, 5, 5)), ('conv2', (50, 20, 5, 5)), ('fc1', (500, 800)), ('score', (10, 500))]

    solver.net.forward()
    solver.test_nets[0].forward()
    np.testing.assert_array_equal(solver.net.blobs['label'].data[:8], np.arange(8))
    first = digit(0, np.random.default_rng(0)) / np.float32(255)  # the LMDB's first record, scaled
    np.testing.assert_allclose(solver.net.blobs['data'].data[0, 0], first, rtol=1e-6)
    tiles = solver.net.blobs['data'].data[:8, 0].transpose(1, 0, 2).reshape(28, 8*28)
    np.testing.assert_array_equal(tiles[:, :28], solver.net.blobs['data'].data[0, 0])

    solver.step(1)
    conv1_diff = solver.net.params['conv1'][0].diff[:, 0].reshape(4, 5, 5, 5).transpose(0, 2, 1, 3).reshape(4*5, 5*5)
    assert np.abs(conv1_diff).max() > 0

    niter, test_interval = 12, 4
    train_loss = np.zeros(niter)
    test_acc = np.zeros(int(np.ceil(niter / test_interval)))
    output = np.zeros((niter, 8, 10))
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs['loss'].data
        labels = solver.test_nets[0].blobs['label'].data.copy()
        solver.test_nets[0].forward(start='conv1')
        np.testing.assert_array_equal(solver.test_nets[0].blobs['label'].data, labels)  # no new batch read
        output[it] = solver.test_nets[0].blobs['score'].data[:8]
        if it % test_interval == 0 or it == niter - 1:
            correct = 0
            for test_it in range(1):  # the 100-image test LMDB is one batch
                solver.test_nets[0].forward()
                correct += sum(solver.test_nets[0].blobs['score'].data.argmax(1)
                               == solver.test_nets[0].blobs['label'].data)
            test_acc[min(it // test_interval, len(test_acc) - 1)] = correct / 1e2
    assert train_loss[-3:].mean() < 0.6 * train_loss[:3].mean(), train_loss
    assert test_acc[0] <= 0.3 and test_acc[-1] >= 0.7, test_acc  # from chance to learned
    assert solver.iter == niter + 1


def test_01_learning_lenet_custom_net_with_caffe_pb2(mnist_examples):
    train_net_path = 'mnist/custom_auto_train.prototxt'
    test_net_path = 'mnist/custom_auto_test.prototxt'
    solver_config_path = 'mnist/custom_auto_solver.prototxt'

    def custom_net(lmdb, batch_size):
        n = caffe.NetSpec()
        n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                                 transform_param=dict(scale=1./255), ntop=2)
        n.score = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type='xavier'))
        n.loss = L.SoftmaxWithLoss(n.score, n.label)
        return n.to_proto()
    with open(train_net_path, 'w') as f:
        f.write(str(custom_net('mnist/mnist_train_lmdb', 64)))
    with open(test_net_path, 'w') as f:
        f.write(str(custom_net('mnist/mnist_test_lmdb', 100)))

    s = caffe_pb2.SolverParameter()
    s.random_seed = 0xCAFFE
    s.train_net = train_net_path
    s.test_net.append(test_net_path)
    s.test_interval = 500
    s.test_iter.append(100)
    s.max_iter = 10000
    s.type = "Adam"
    s.base_lr = 0.01
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.lr_policy = 'inv'
    s.gamma = 0.0001
    s.power = 0.75
    s.display = 1000
    s.snapshot = 5000
    s.snapshot_prefix = 'mnist/custom_net'
    s.solver_mode = caffe_pb2.SolverParameter.GPU
    with open(solver_config_path, 'w') as f:
        f.write(str(s))

    solver = None
    solver = caffe.get_solver(solver_config_path)
    assert type(solver).__name__ == "AdamSolver"
    niter = 20
    train_loss = np.zeros(niter)
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs['loss'].data
    solver.test_nets[0].forward()
    correct = sum(solver.test_nets[0].blobs['score'].data.argmax(1) == solver.test_nets[0].blobs['label'].data)
    assert train_loss[-3:].mean() < train_loss[:3].mean(), train_loss
    assert correct >= 80
    # the seed makes the run reproducible, as the notebook says
    again = caffe.get_solver(solver_config_path)
    again.step(3)
    solver2 = caffe.get_solver(solver_config_path)
    solver2.step(3)
    np.testing.assert_array_equal(again.net.params['score'][0].data, solver2.net.params['score'][0].data)


def _style_tree(root: Path):
    """data/flickr_style/{train,test}.txt over generated images, and ImageNet's mean as binaryproto."""
    style = root / "data" / "flickr_style"
    (style / "images").mkdir(parents=True)
    (root / "models" / "finetune_flickr_style").mkdir()  # shipped with Caffe: the snapshot_prefix's folder
    lines = []
    for i in range(12):
        path = style / "images" / f"{i}.jpg"
        cv2.imwrite(str(path), smooth_image(40, 40, 100 + i))
        lines.append(f"{path} {i % 5}\n")
    (style / "train.txt").write_text("".join(lines[:8]))
    (style / "test.txt").write_text("".join(lines[8:]))
    mean = np.random.default_rng(9).random((3, 40, 40)) * 20 + 110
    blob = caffe.io.array_to_blobproto(mean[None])
    (root / "data" / "ilsvrc12" / "imagenet_mean.binaryproto").write_bytes(blob.SerializeToString())


def test_02_fine_tuning(tmp_path, monkeypatch):
    caffe_root = str(caffe_tree(tmp_path)) + "/"
    _style_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    use_device()
    NUM_STYLE_LABELS = 5
    weights = os.path.join(caffe_root, 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel')
    assert os.path.exists(weights)

    weight_param = dict(lr_mult=1, decay_mult=1)
    bias_param = dict(lr_mult=2, decay_mult=0)
    learned_param = [weight_param, bias_param]
    frozen_param = [dict(lr_mult=0)] * 2

    def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1, param=learned_param,
                  weight_filler=dict(type='gaussian', std=0.01), bias_filler=dict(type='constant', value=0.1)):
        conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group,
                             param=param, weight_filler=weight_filler, bias_filler=bias_filler)
        return conv, L.ReLU(conv, in_place=True)

    def fc_relu(bottom, nout, param=learned_param, weight_filler=dict(type='gaussian', std=0.005),
                bias_filler=dict(type='constant', value=0.1)):
        fc = L.InnerProduct(bottom, num_output=nout, param=param, weight_filler=weight_filler,
                            bias_filler=bias_filler)
        return fc, L.ReLU(fc, in_place=True)

    def max_pool(bottom, ks, stride=1):
        return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)

    def caffenet(data, label=None, train=True, num_classes=1000, classifier_name='fc8', learn_all=False):
        """The notebook's CaffeNet at the miniature's sizes (tests/tutorial_data.py)."""
        n = caffe.NetSpec()
        n.data = data
        param = learned_param if learn_all else frozen_param
        n.conv1, n.relu1 = conv_relu(n.data, 5, 8, stride=2, param=param)
        n.pool1 = max_pool(n.relu1, 3, stride=2)
        n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
        n.conv2, n.relu2 = conv_relu(n.norm1, 3, 8, pad=1, group=2, param=param)
        n.pool2 = max_pool(n.relu2, 3, stride=2)
        n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
        n.conv3, n.relu3 = conv_relu(n.norm2, 3, 8, pad=1, param=param)
        n.conv4, n.relu4 = conv_relu(n.relu3, 3, 8, pad=1, group=2, param=param)
        n.conv5, n.relu5 = conv_relu(n.relu4, 3, 8, pad=1, group=2, param=param)
        n.pool5 = max_pool(n.relu5, 3, stride=2)
        n.fc6, n.relu6 = fc_relu(n.pool5, 16, param=param)
        if train:
            n.drop6 = fc7input = L.Dropout(n.relu6, in_place=True)
        else:
            fc7input = n.relu6
        n.fc7, n.relu7 = fc_relu(fc7input, 16, param=param)
        if train:
            n.drop7 = fc8input = L.Dropout(n.relu7, in_place=True)
        else:
            fc8input = n.relu7
        fc8 = L.InnerProduct(fc8input, num_output=num_classes, param=learned_param)
        n.__setattr__(classifier_name, fc8)
        if not train:
            n.probs = L.Softmax(fc8)
        if label is not None:
            n.label = label
            n.loss = L.SoftmaxWithLoss(fc8, n.label)
            n.acc = L.Accuracy(fc8, n.label)
        with tempfile.NamedTemporaryFile('w', delete=False, dir=tmp_path) as f:
            f.write(str(n.to_proto()))
            return f.name

    dummy_data = L.DummyData(shape=dict(dim=[1, 3, SIDE, SIDE]))
    imagenet_net_filename = caffenet(data=dummy_data, train=False, num_classes=10)
    imagenet_net = caffe.Net(imagenet_net_filename, weights, caffe.TEST)

    def style_net(train=True, learn_all=False, subset=None):
        if subset is None:
            subset = 'train' if train else 'test'
        source = caffe_root + 'data/flickr_style/%s.txt' % subset
        transform_param = dict(mirror=train, crop_size=SIDE,
                               mean_file=caffe_root + 'data/ilsvrc12/imagenet_mean.binaryproto')
        style_data, style_label = L.ImageData(transform_param=transform_param, source=source,
                                              batch_size=4, new_height=40, new_width=40, ntop=2)
        return caffenet(data=style_data, label=style_label, train=train, num_classes=NUM_STYLE_LABELS,
                        classifier_name='fc8_flickr', learn_all=learn_all)

    untrained_style_net = caffe.Net(style_net(train=False, subset='train'), weights, caffe.TEST)
    untrained_style_net.forward()
    style_data_batch = untrained_style_net.blobs['data'].data.copy()
    style_label_batch = np.array(untrained_style_net.blobs['label'].data, dtype=np.int32)
    np.testing.assert_array_equal(style_label_batch, [0, 1, 2, 3])

    def disp_preds(net, image, k=5):
        net.blobs['data'].data[0, ...] = image
        probs = net.forward(start='conv1')['probs'][0]
        return (-probs).argsort()[:k]

    image = style_data_batch[1]
    disp_preds(imagenet_net, image)
    disp_preds(untrained_style_net, image)
    diff = untrained_style_net.blobs['fc7'].data[0] - imagenet_net.blobs['fc7'].data[0]
    error = (diff ** 2).sum()
    assert error < 1e-8  # the notebook's own check: conv1..fc7 came from the same weights
    del untrained_style_net

    def solver(train_net_path, test_net_path=None, base_lr=0.001):
        s = caffe_pb2.SolverParameter()
        s.train_net = train_net_path
        if test_net_path is not None:
            s.test_net.append(test_net_path)
            s.test_interval = 1000
            s.test_iter.append(100)
        s.iter_size = 1
        s.max_iter = 100000
        s.type = 'SGD'
        s.base_lr = base_lr
        s.lr_policy = 'step'
        s.gamma = 0.1
        s.stepsize = 20000
        s.momentum = 0.9
        s.weight_decay = 5e-4
        s.display = 1000
        s.snapshot = 10000
        s.snapshot_prefix = caffe_root + 'models/finetune_flickr_style/finetune_flickr_style'
        s.solver_mode = caffe_pb2.SolverParameter.GPU
        with tempfile.NamedTemporaryFile('w', delete=False, dir=tmp_path) as f:
            f.write(str(s))
            return f.name

    def run_solvers(niter, solvers, disp_interval=10):
        blobs = ('loss', 'acc')
        loss, acc = ({name: np.zeros(niter) for name, _ in solvers} for _ in blobs)
        for it in range(niter):
            for name, s in solvers:
                s.step(1)
                loss[name][it], acc[name][it] = (s.net.blobs[b].data.copy() for b in blobs)
        weight_dir = tempfile.mkdtemp(dir=tmp_path)
        weights = {}
        for name, s in solvers:
            filename = 'weights.%s.caffemodel' % name
            weights[name] = os.path.join(weight_dir, filename)
            s.net.save(weights[name])
        return loss, acc, weights

    niter = 3
    style_solver = caffe.get_solver(solver(style_net(train=True), base_lr=0.01))
    style_solver.net.copy_from(weights)
    scratch_style_solver = caffe.get_solver(solver(style_net(train=True), base_lr=0.01))
    conv1_before = style_solver.net.params['conv1'][0].data.copy()
    fc8_before = style_solver.net.params['fc8_flickr'][0].data.copy()
    solvers = [('pretrained', style_solver), ('scratch', scratch_style_solver)]
    loss, acc, weights_out = run_solvers(niter, solvers)
    np.testing.assert_array_equal(conv1_before, imagenet_net.params['conv1'][0].data)  # copy_from
    np.testing.assert_array_equal(style_solver.net.params['conv1'][0].data, conv1_before)  # frozen: lr_mult 0
    assert np.abs(style_solver.net.params['fc8_flickr'][0].data - fc8_before).max() > 0
    assert np.all(np.isfinite(loss['pretrained'])) and np.all((acc['scratch'] >= 0) & (acc['scratch'] <= 1))
    style_weights = weights_out['pretrained']
    del style_solver, scratch_style_solver, solvers

    def eval_style_net(weights, test_iters=2):
        test_net = caffe.Net(style_net(train=False), weights, caffe.TEST)
        accuracy, by_hand = 0, 0
        for it in range(test_iters):
            accuracy += test_net.forward()['acc']
            by_hand += np.mean(test_net.blobs['fc8_flickr'].data.argmax(1) == test_net.blobs['label'].data)
        return test_net, accuracy / test_iters, by_hand / test_iters

    test_net, accuracy, by_hand = eval_style_net(style_weights)
    assert accuracy == pytest.approx(by_hand)

    end_to_end_net = style_net(train=True, learn_all=True)
    style_solver = caffe.get_solver(solver(end_to_end_net, base_lr=0.01))
    style_solver.net.copy_from(style_weights)
    conv1_before = style_solver.net.params['conv1'][0].data.copy()
    _, _, finetuned_weights = run_solvers(2, [('pretrained, end-to-end', style_solver)])
    assert np.abs(style_solver.net.params['conv1'][0].data - conv1_before).max() > 0  # now learned
    tuned = caffe.Net(style_net(train=False), finetuned_weights['pretrained, end-to-end'], caffe.TEST)
    np.testing.assert_array_equal(tuned.params['conv1'][0].data, style_solver.net.params['conv1'][0].data)


def two_blobs(n, rng):
    """make_classification's stand-in: two classes of 4-D points, separable with some overlap."""
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, 4)) + np.array([2.0, -2.0, 0.0, 0.0]) * (2 * y[:, None] - 1) * 0.8
    return X, y


def test_brewing_logreg(tmp_path, monkeypatch):
    import h5py
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X, y = two_blobs(2000, rng)
    X, Xt, y, yt = X[:1500], X[1500:], y[:1500], y[1500:]

    dirname = os.path.abspath('./examples/hdf5_classification/data')
    if not os.path.exists(dirname):
        os.makedirs(dirname)
    train_filename = os.path.join(dirname, 'train.h5')
    test_filename = os.path.join(dirname, 'test.h5')
    with h5py.File(train_filename, 'w') as f:
        f['data'] = X
        f['label'] = y.astype(np.float32)
    with open(os.path.join(dirname, 'train.txt'), 'w') as f:
        f.write(train_filename + '\n')
        f.write(train_filename + '\n')
    comp_kwargs = {'compression': 'gzip', 'compression_opts': 1}
    with h5py.File(test_filename, 'w') as f:
        f.create_dataset('data', data=Xt, **comp_kwargs)
        f.create_dataset('label', data=yt.astype(np.float32), **comp_kwargs)
    with open(os.path.join(dirname, 'test.txt'), 'w') as f:
        f.write(test_filename + '\n')

    def logreg(hdf5, batch_size):
        n = caffe.NetSpec()
        n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
        n.ip1 = L.InnerProduct(n.data, num_output=2, weight_filler=dict(type='xavier'))
        n.accuracy = L.Accuracy(n.ip1, n.label)
        n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
        return n.to_proto()

    train_net_path = 'examples/hdf5_classification/logreg_auto_train.prototxt'
    with open(train_net_path, 'w') as f:
        f.write(str(logreg('examples/hdf5_classification/data/train.txt', 10)))
    test_net_path = 'examples/hdf5_classification/logreg_auto_test.prototxt'
    with open(test_net_path, 'w') as f:
        f.write(str(logreg('examples/hdf5_classification/data/test.txt', 10)))

    def solver(train_net_path, test_net_path):
        s = caffe_pb2.SolverParameter()
        s.train_net = train_net_path
        s.test_net.append(test_net_path)
        s.test_interval = 1000
        s.test_iter.append(50)
        s.max_iter = 300
        s.base_lr = 0.01
        s.lr_policy = 'step'
        s.gamma = 0.1
        s.stepsize = 5000
        s.momentum = 0.9
        s.weight_decay = 5e-4
        s.display = 1000
        s.snapshot = 10000
        s.snapshot_prefix = 'examples/hdf5_classification/data/train'
        s.solver_mode = caffe_pb2.SolverParameter.CPU
        return s

    solver_path = 'examples/hdf5_classification/logreg_solver.prototxt'
    with open(solver_path, 'w') as f:
        f.write(str(solver(train_net_path, test_net_path)))

    def timeit_cell(solver_path):  # %%timeit runs the cell in a namespace of its own
        caffe.set_mode_cpu()
        solver = caffe.get_solver(solver_path)
        solver.solve()
        accuracy = 0
        batch_size = solver.test_nets[0].blobs['data'].num
        test_iters = int(len(Xt) / batch_size)
        correct = 0
        for i in range(test_iters):
            solver.test_nets[0].forward()
            accuracy += solver.test_nets[0].blobs['accuracy'].data
            correct += np.sum(solver.test_nets[0].blobs['ip1'].data.argmax(1)
                              == solver.test_nets[0].blobs['label'].data)
        accuracy /= test_iters
        return solver, accuracy, batch_size, test_iters, correct

    solver_, accuracy, batch_size, test_iters, correct = timeit_cell(solver_path)
    assert batch_size == 10 and solver_.iter == 300
    assert accuracy == pytest.approx(correct / (test_iters * batch_size), abs=1e-6)
    # a least-squares linear classifier on the same data, as the notebook's scikit-learn comparison
    w, *_ = np.linalg.lstsq(np.c_[X, np.ones(len(X))], 2.0 * y - 1, rcond=None)
    baseline = np.mean((np.c_[Xt, np.ones(len(Xt))] @ w > 0) == yt)
    assert accuracy > baseline - 0.05, (accuracy, baseline)
    # the snapshot solve() writes at the end, under the snapshot_prefix
    assert os.path.exists('examples/hdf5_classification/data/train_iter_300.caffemodel')

    def nonlinear_net(hdf5, batch_size):
        n = caffe.NetSpec()
        n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
        n.ip1 = L.InnerProduct(n.data, num_output=40, weight_filler=dict(type='xavier'))
        n.relu1 = L.ReLU(n.ip1, in_place=True)
        n.ip2 = L.InnerProduct(n.ip1, num_output=2, weight_filler=dict(type='xavier'))
        n.accuracy = L.Accuracy(n.ip2, n.label)
        n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
        return n.to_proto()

    train_net_path = 'examples/hdf5_classification/nonlinear_auto_train.prototxt'
    with open(train_net_path, 'w') as f:
        f.write(str(nonlinear_net('examples/hdf5_classification/data/train.txt', 10)))
    test_net_path = 'examples/hdf5_classification/nonlinear_auto_test.prototxt'
    with open(test_net_path, 'w') as f:
        f.write(str(nonlinear_net('examples/hdf5_classification/data/test.txt', 10)))
    solver_path = 'examples/hdf5_classification/nonlinear_logreg_solver.prototxt'
    with open(solver_path, 'w') as f:
        f.write(str(solver(train_net_path, test_net_path)))
    # !./build/tools/caffe train -solver examples/hdf5_classification/nonlinear_logreg_solver.prototxt
    from netspec.cli import main
    assert main(['train', '-solver', solver_path]) == 0
    net = caffe.Net(test_net_path, 'examples/hdf5_classification/data/train_iter_300.caffemodel', caffe.TEST)
    hits = sum(np.sum(net.forward()['accuracy'] * 10) for _ in range(test_iters))
    assert hits / len(Xt) > baseline - 0.05


@pytest.mark.slow
def test_caffe_tree_mnist_train_from_the_root(tmp_path, monkeypatch):
    """examples/mnist/lenet_solver.prototxt and lenet_train_test.prototxt as BVLC ships them, over
    generated LMDBs at their paths, run as `netspec train --solver=examples/mnist/lenet_solver.prototxt`
    from the tree's root; Ctrl-C after the first logged iterations stops it (the solver asks for
    10,000), and the snapshot lands at the solver's snapshot_prefix."""
    mnist = tmp_path / "examples" / "mnist"
    mnist.mkdir(parents=True)
    for name in ("lenet_solver.prototxt", "lenet_train_test.prototxt"):
        (mnist / name).write_bytes((BVLC / "mnist" / name).read_bytes())
    write_mnist_lmdb(mnist / "mnist_train_lmdb", 128, seed=0)
    write_mnist_lmdb(mnist / "mnist_test_lmdb", 100, seed=1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "netspec", "train", "--solver=examples/mnist/lenet_solver.prototxt",
                             "--no-progress"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "Train net output #0: loss" in line:  # iteration 0 trained and displayed
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.read().splitlines(keepends=True)
    assert proc.wait(timeout=120) == 0, "".join(lines[-20:])
    log = "".join(lines)
    assert "Test net output #0: accuracy" in log  # the test at iteration 0, on the test LMDB
    snapshots = sorted(mnist.glob("lenet_iter_*.caffemodel"))
    assert snapshots, log[-2000:]
    monkeypatch.chdir(tmp_path)  # the data sources are relative to the tree's root, as in Caffe
    net = caffe.Net("examples/mnist/lenet_train_test.prototxt", str(snapshots[-1]), caffe.TEST)
    assert net.params["conv1"][0].data.shape == (20, 1, 5, 5)
