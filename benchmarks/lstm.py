"""netspec's LSTM layer against the same recurrence written by hand in torch: forward + backward.

netspec's side is a compiled prototxt net (Input x, cont, target -> LSTM -> EuclideanLoss) run as the
solver runs it (the fx graph, Caffe's weighted loss sum, autograd backward). The baseline is a plain
torch function with the same weights: the input projection for all timesteps at once, then per step
gates = W_xc x_t + b_c + W_hc (cont_t h), i, f, o = sigmoid, g = tanh, c = cont_t f c + i g, h = o tanh c,
and the same Euclidean loss. Before timing both must give the same loss and W_hc gradient. Then they
take turns (`--repeat` rounds) and the median seconds per forward+backward and the ratio are printed.
Goal: ratio <= 1.3.

    python benchmarks/lstm.py [--T 20] [--N 32] [--input 64] [--hidden 128] [--repeat 21] [--threads 1 --clock cpu]
"""
from __future__ import annotations

import argparse

import torch
from common import add_clock_args, apply_clock_args, interleaved, machine, median

from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.proto import pb

NET = """name: "lstm_bench"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {T} dim: {N} dim: {I} }} }} }}
layer {{ name: "cont" type: "Input" top: "cont" input_param {{ shape {{ dim: {T} dim: {N} }} }} }}
layer {{ name: "target" type: "Input" top: "target" input_param {{ shape {{ dim: {T} dim: {N} dim: {H} }} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param {{ num_output: {H} weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }}
                    bias_filler {{ type: "uniform" min: -0.1 max: 0.1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "h" bottom: "target" top: "loss" }}
"""


def hand_lstm(x, cont, target, w_xc, b_c, w_hc):
    """The LSTM recurrence and Euclidean loss, written directly in torch."""
    t_, n = x.shape[:2]
    hidden = w_hc.shape[1]
    gx = torch.nn.functional.linear(x, w_xc, b_c)
    h = x.new_zeros(n, hidden)
    c = x.new_zeros(n, hidden)
    hs = []
    for t in range(t_):
        keep = cont[t].unsqueeze(1)
        gates = gx[t] + (keep * h) @ w_hc.t()
        i, f, o, g = gates.chunk(4, dim=1)
        c = keep * torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    return ((torch.stack(hs) - target) ** 2).sum() / (2.0 * t_)  # EuclideanLoss: / 2·(first axis)


def loss_fn(net):
    """The solver's forward: the fx graph returning the loss blob, then Caffe's weighted sum."""
    gm = net.graph_module(outputs=list(net.loss_weights))
    return lambda *inputs: net.total_loss(gm(*inputs))


def setup(args):
    net = compile_net(load_net(NET.format(T=args.T, N=args.N, I=args.input, H=args.hidden), pb.TRAIN), seed=1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.T, args.N, args.input, generator=gen)
    cont = torch.ones(args.T, args.N)
    cont[0] = 0
    cont[args.T // 2, ::3] = 0  # some streams start a new sequence half way
    target = torch.randn(args.T, args.N, args.hidden, generator=gen)
    layer = net.layers["lstm"]
    hand_params = [p.detach().clone().requires_grad_() for p in (layer.W_xc, layer.b_c, layer.W_hc)]
    return net, layer, hand_params, (x, cont, target)


def check_same(net, layer, hand_params, inputs) -> float:
    f = loss_fn(net)
    a = f(*inputs)
    a.backward()
    b = hand_lstm(*inputs, *hand_params)
    b.backward()
    g, h = layer.W_hc.grad, hand_params[2].grad
    err = float((g - h).abs().max())
    a, b = a.detach(), b.detach()
    assert abs(float(a) - float(b)) <= 1e-5 * abs(float(b)) and err <= 1e-4 * float(h.abs().max()), \
        f"loss {float(a)} vs {float(b)}, W_hc gradient worst error {err}"
    net.zero_grad(set_to_none=True)
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=21)
    add_clock_args(ap)
    args = ap.parse_args()
    clock = apply_clock_args(args, "cpu")
    net, layer, hand_params, inputs = setup(args)
    err = check_same(net, layer, hand_params, inputs)
    f = loss_fn(net)

    def netspec():
        f(*inputs).backward()
        net.zero_grad(set_to_none=True)

    def hand():
        hand_lstm(*inputs, *hand_params).backward()
        for p in hand_params:
            p.grad = None

    interleaved({"netspec": netspec, "hand": hand}, 3, clock=clock)  # warm-up
    times = interleaved({"netspec": netspec, "hand": hand}, args.repeat, clock=clock)
    a, b = median(times["netspec"]), median(times["hand"])
    print(machine())
    print(f"LSTM T={args.T} N={args.N} input={args.input} hidden={args.hidden}, {clock} clock, "
          f"{args.repeat} rounds; same loss, W_hc grad worst error {err:.1e}")
    print(f"netspec {a * 1e3:.2f} ms (min {min(times['netspec']) * 1e3:.2f}), hand {b * 1e3:.2f} ms "
          f"(min {min(times['hand']) * 1e3:.2f}), ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
