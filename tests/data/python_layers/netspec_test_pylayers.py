"""Python layers for tests/test_layers_python.py, written against pycaffe's caffe.Layer as users
write them (imported by name through sys.path / PYTHONPATH, as python_param's module)."""
import numpy as np

import netspec as caffe


class Scale(caffe.Layer):
    """top = k * bottom, k from param_str."""

    def setup(self, bottom, top):
        self.k = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.k * top[0].diff


class Mul(caffe.Layer):
    """top = a * b * a (two bottoms, a nonlinear product for the gradient check)."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        a, b = bottom[0].data, bottom[1].data
        top[0].data[...] = a * a * b

    def backward(self, top, propagate_down, bottom):
        a, b, g = bottom[0].data, bottom[1].data, top[0].diff
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * a * b * g
        if propagate_down[1]:
            bottom[1].diff[...] = a * a * g


class EuclideanLoss(caffe.Layer):
    """pycaffe's examples/pycaffe/layers/pyloss.py: sum((a - b)^2) / num / 2."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise ValueError("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                sign = 1 if i == 0 else -1
                bottom[i].diff[...] = sign * top[0].diff[0] * self.diff / bottom[i].num


class Bias(caffe.Layer):
    """top = bottom + b with a learnable b of one value per channel (Caffe's Bias layer, axis 1)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].data.shape[1])
        self.blobs[0].data[...] = float(self.param_str or 0)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.blobs[0].data.reshape(1, -1)

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
        self.blobs[0].diff[...] += top[0].diff.sum(axis=0)


class Counter(caffe.Layer):
    """A data layer: batches of 4 rows x 3 values counting up (param_str "fixed": always the first
    batch), labels their row sums."""

    def setup(self, bottom, top):
        if bottom:
            raise ValueError("Counter is a data layer: no bottoms")
        self.step = 0

    def reshape(self, bottom, top):
        top[0].reshape(4, 3)
        top[1].reshape(4, 1)

    def forward(self, bottom, top):
        x = (np.arange(12, dtype=np.float32).reshape(4, 3) + self.step) % 7 / 7.0
        top[0].data[...] = x
        top[1].data[...] = x.sum(axis=1, keepdims=True)
        self.step += 0 if self.param_str == "fixed" else 1


class Phase(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class Raise(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        raise ValueError("boom in forward")


class RaiseInSetup(caffe.Layer):
    def setup(self, bottom, top):
        raise KeyError("no such option")


class MultilabelData(caffe.Layer):
    """pascal-multilabel-with-datalayer's pattern: a dict in param_str, the tops shaped once in setup,
    an empty reshape; batch i holds images (i + n) / 10 and labels n % 2."""

    def setup(self, bottom, top):
        params = eval(self.param_str)  # noqa: S307  (the notebook's own way)
        self.batch_size, self.shape = params["batch_size"], params["im_shape"]
        self.batch = 0
        top[0].reshape(self.batch_size, 3, *self.shape)
        top[1].reshape(self.batch_size, 20)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for n in range(self.batch_size):
            top[0].data[n, ...] = (self.batch + n) / 10.0
            top[1].data[n, ...] = (np.arange(20) + n) % 2
        self.batch += 1

    def backward(self, top, propagate_down, bottom):
        pass
