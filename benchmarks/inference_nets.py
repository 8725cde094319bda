"""Deploy nets for benchmarks/inference.py, written with netspec's NetSpec builder layer for layer as
their authors' deploy prototxts: BVLC GoogLeNet (models/bvlc_googlenet/deploy.prototxt: inception
blocks of 1x1/3x3/5x5/pool branches, LRN, Concat) and ResNet-50 (KaimingHe/deep-residual-networks'
ResNet-50-deploy.prototxt: bottleneck blocks, each convolution followed by in-place BatchNorm with
global statistics, Scale and ReLU, stride on branch2a). CaffeNet is models/caffenet/deploy.prototxt.
"""
from __future__ import annotations

from netspec import NetSpec, layers as L, params as P


def _conv(bottom, n, k, stride=1, pad=0, bias=True):
    return L.Convolution(bottom, num_output=n, kernel_size=k, stride=stride, pad=pad, bias_term=bias,
                         weight_filler=dict(type="xavier"), bias_filler=dict(type="constant", value=0.2))


def _conv_relu(n, name, bottom, num, k, stride=1, pad=0):
    setattr(n, name, _conv(bottom, num, k, stride, pad))
    top = getattr(n, name)
    setattr(n, name + "_relu", L.ReLU(top, in_place=True))
    return top


def _inception(n, name, bottom, c1, c3r, c3, c5r, c5, cp):
    b1 = _conv_relu(n, f"{name}/1x1", bottom, c1, 1)
    r3 = _conv_relu(n, f"{name}/3x3_reduce", bottom, c3r, 1)
    b3 = _conv_relu(n, f"{name}/3x3", r3, c3, 3, pad=1)
    r5 = _conv_relu(n, f"{name}/5x5_reduce", bottom, c5r, 1)
    b5 = _conv_relu(n, f"{name}/5x5", r5, c5, 5, pad=2)
    setattr(n, f"{name}/pool", L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1))
    bp = _conv_relu(n, f"{name}/pool_proj", getattr(n, f"{name}/pool"), cp, 1)
    setattr(n, f"{name}/output", L.Concat(b1, b3, b5, bp))
    return getattr(n, f"{name}/output")


def googlenet(batch: int) -> str:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, 224, 224]))
    x = _conv_relu(n, "conv1/7x7_s2", n.data, 64, 7, stride=2, pad=3)
    n["pool1/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], local_size=5, alpha=0.0001, beta=0.75)
    x = _conv_relu(n, "conv2/3x3_reduce", n["pool1/norm1"], 64, 1)
    x = _conv_relu(n, "conv2/3x3", x, 192, 3, pad=1)
    n["conv2/norm2"] = L.LRN(x, local_size=5, alpha=0.0001, beta=0.75)
    x = n["pool2/3x3_s2"] = L.Pooling(n["conv2/norm2"], pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = _inception(n, "inception_3a", x, 64, 96, 128, 16, 32, 32)
    x = _inception(n, "inception_3b", x, 128, 128, 192, 32, 96, 64)
    x = n["pool3/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    for name, cfg in (("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
                      ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
                      ("4e", (256, 160, 320, 32, 128, 128))):
        x = _inception(n, f"inception_{name}", x, *cfg)
    x = n["pool4/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = _inception(n, "inception_5a", x, 256, 160, 320, 32, 128, 128)
    x = _inception(n, "inception_5b", x, 384, 192, 384, 48, 128, 128)
    n["pool5/7x7_s1"] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    n["loss3/classifier"] = L.InnerProduct(n["pool5/7x7_s1"], num_output=1000,
                                           weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n["loss3/classifier"])
    return "name: \"GoogleNet\"\n" + str(n.to_proto())


def _conv_bn(n, name, bottom, num, k, stride=1, pad=0, relu=True):
    n[name] = _conv(bottom, num, k, stride, pad, bias=False)
    n["bn" + name[3:]] = L.BatchNorm(n[name], use_global_stats=True, in_place=True)
    n["scale" + name[3:]] = L.Scale(n[name], bias_term=True, in_place=True)
    if relu:
        n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def resnet50(batch: int) -> str:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, 224, 224]))
    x = _conv_bn(n, "conv1", n.data, 64, 7, stride=2, pad=3)
    x = n.pool1 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=2):
        for b in range(blocks):
            name = f"{stage}{'abcdef'[b]}"
            stride = 2 if b == 0 and stage > 2 else 1
            short = _conv_bn(n, f"res{name}_branch1", x, 4 * width, 1, stride, relu=False) if b == 0 else x
            y = _conv_bn(n, f"res{name}_branch2a", x, width, 1, stride)
            y = _conv_bn(n, f"res{name}_branch2b", y, width, 3, pad=1)
            y = _conv_bn(n, f"res{name}_branch2c", y, 4 * width, 1, relu=False)
            n[f"res{name}"] = L.Eltwise(short, y)
            x = n[f"res{name}_relu"] = L.ReLU(n[f"res{name}"], in_place=True)
    n.pool5 = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000, weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n.fc1000)
    return "name: \"ResNet-50\"\n" + str(n.to_proto())
