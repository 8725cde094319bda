"""Recurrent layers: RNN, LSTM and LSTMUnit (Caffe's recurrent_layer.cpp, rnn_layer.cpp, lstm_layer.cpp,
lstm_unit_layer.cpp).

Caffe unrolls RNN and LSTM into an inner net of InnerProduct/Eltwise/Scale/LSTMUnit layers; netspec runs
the same arithmetic directly: the input projection for all T timesteps in one matrix product, then a
loop over T only. Layout and semantics are Caffe's:
- bottoms x (T×N×...), cont (T×N; 0 starts a new sequence: the previous hidden and cell state are
  multiplied by cont_t), optional x_static (N×...) and, with expose_hidden, the initial states;
- tops: the outputs (T×N×H), and with expose_hidden the final states (1×N×H each);
- without expose_hidden the final state of one forward is the initial state of the next (Caffe copies
  h_T to h_0 before every forward); no gradient flows across forwards.
Parameter blobs are in Caffe's order and shapes, so caffemodels load:
  LSTM: W_xc (4H×I), b_c (4H), [W_xc_static (4H×S)], W_hc (4H×H); gates in the order i, f, o, g.
  RNN:  W_xh (H×I), b_h (H), [W_xh_static (H×S)], W_hh (H×H), W_ho (H×H), b_o (H);
        h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h), o_t = tanh(W_ho h_t + b_o).
Gradients are autograd's. They equal Caffe's hand-written backward for cont in {0, 1}, the markers
Caffe documents; for other cont values Caffe's LSTMUnit differentiates f = cont·σ(x_f) as f(1 - f)
rather than cont·σ(1 - σ), and netspec keeps the exact derivative.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from .base import Layer, register

log = logging.getLogger("netspec")


def lstm_cell(c_prev, gates, cont):
    """One LSTMUnit step: gates (N×4H) in the order i, f, o, g; cont (N×1) scales the forget gate."""
    hidden = c_prev.shape[-1]
    ifo = torch.sigmoid(gates[..., : 3 * hidden])
    i, f, o = ifo[..., :hidden], ifo[..., hidden: 2 * hidden], ifo[..., 2 * hidden:]
    g = torch.tanh(gates[..., 3 * hidden:])
    c = (cont * f) * c_prev + i * g
    return c, o * torch.tanh(c)


@register("LSTMUnit")
class LSTMUnit(Layer):
    """c_t = cont·σ(f)·c_{t-1} + σ(i)·tanh(g), h_t = σ(o)·tanh(c_t); bottoms c_prev (1×N×D), x (1×N×4D),
    cont (1×N); tops c and h (1×N×D)."""

    exact_bottoms, exact_tops = 3, 2

    def infer_top_shapes(self, bottom_shapes):
        c_prev, x, cont = (tuple(s) for s in bottom_shapes)
        n = c_prev[1] if len(c_prev) > 1 else None
        for k, (shape, axes) in enumerate(((c_prev, 3), (x, 3), (cont, 2))):
            if len(shape) != axes or shape[0] != 1 or shape[1] != n:
                raise self.shape_error(f"bottom {k} '{self.lp.bottom[k]}' has shape {shape}; LSTMUnit needs "
                                       f"c_prev 1×N×D, x 1×N×4D and cont 1×N with one N")
        if x[2] != 4 * c_prev[2]:
            raise self.shape_error(f"bottom 1 '{self.lp.bottom[1]}' has {x[2]} gate values per item; "
                                   f"4 × {c_prev[2]} (the cell size of c_prev) are needed")
        return [c_prev, c_prev]

    def forward(self, c_prev, x, cont):
        c, h = lstm_cell(c_prev, x, cont.detach().unsqueeze(-1).to(x.dtype))
        # top c is its own node: its diff is what the layers above send, as in Caffe, not also the
        # share that reaches c through h inside this layer
        return c.view_as(c), h


class _Recurrent(Layer):
    """The shared part of RNN and LSTM (Caffe's RecurrentLayer): bottoms, tops, state and parameters."""

    min_bottoms = 2
    states: tuple[str, ...] = ()     # recurrent state names, Caffe's RecurrentInputBlobNames order
    weights: tuple[str, ...] = ()    # blob names that take weight_filler (the rest take bias_filler)
    gate_factor = 1                  # rows of W_x* per hidden unit (4 for the LSTM's gates)

    @property
    def param(self):
        return self.lp.recurrent_param  # RNN and LSTM share Caffe's RecurrentParameter

    def setup(self, bottom_shapes):
        p = self.param
        if p.num_output <= 0:
            raise self.error("recurrent_param.num_output must be positive")
        self.hidden, self.expose, self.debug_info = int(p.num_output), p.expose_hidden, p.debug_info
        exposed = len(self.states) if self.expose else 0
        self.static = len(bottom_shapes) > 2 + exposed
        self._check_bottoms(bottom_shapes, exposed)
        want_tops = 1 + exposed
        if len(self.lp.top) != want_tops:
            raise self.error(f"{self.type} has {want_tops} top(s) with expose_hidden {str(self.expose).lower()}, "
                             f"found {len(self.lp.top)}")
        x = bottom_shapes[0]
        self.inputs = math.prod(x[2:])
        rows = self.gate_factor * self.hidden
        self._make_blobs(rows, bottom_shapes[2] if self.static else None)
        self._carried: dict[str, torch.Tensor] = {}

    def _check_bottoms(self, shapes, exposed: int) -> None:
        x, cont = tuple(shapes[0]), tuple(shapes[1])
        if len(x) < 2:
            raise self.shape_error(f"bottom 0 '{self.lp.bottom[0]}' has shape {x}; it must be T×N×...")
        if cont != x[:2]:
            raise self.shape_error(f"bottom 1 '{self.lp.bottom[1]}' (cont) has shape {cont}; it must be "
                                   f"T×N = {x[:2]}, as bottom 0 '{self.lp.bottom[0]}' {x}")
        if len(shapes) > 3 + exposed or (self.expose and len(shapes) < 2 + exposed):
            raise self.error(f"{self.type} takes x, cont, optionally x_static" +
                             (f" and {', '.join(self.states)}" if self.expose else "") +
                             f"; found {len(shapes)} bottoms")
        if self.static and (len(shapes[2]) < 1 or shapes[2][0] != x[1]):
            raise self.shape_error(f"bottom 2 '{self.lp.bottom[2]}' (x_static) has shape {tuple(shapes[2])}; "
                                   f"its first axis must be N = {x[1]}")
        for k in range(2 + self.static, len(shapes)):
            if tuple(shapes[k]) != (1, x[1], self.hidden):
                raise self.shape_error(f"bottom {k} '{self.lp.bottom[k]}' has shape {tuple(shapes[k])}; the "
                                       f"initial state must be {(1, x[1], self.hidden)}")

    def _make_blobs(self, rows: int, static_shape) -> None:
        """Caffe's blob order: input weights, input bias, [static weights], recurrent weights, ..."""
        names = list(self.blob_names)
        if static_shape is None:
            names.remove(self.static_blob)
        self.blob_names = tuple(names)
        for name in names:
            self.new_blob(name, self._blob_shape(name, rows, static_shape))

    def filler(self, blob_name):
        p = self.param
        return p.weight_filler if blob_name in self.weights else p.bias_filler

    def infer_top_shapes(self, bottom_shapes):
        x = tuple(bottom_shapes[0])
        state = (1, x[1], self.hidden)
        return [x[:2] + (self.hidden,)] + [state] * (len(self.lp.top) - 1)

    # ---- running --------------------------------------------------------------------------------
    def _inputs(self, x, static, w, b, w_static):
        """The input projection of all timesteps at once (+ the static input's, the same at every t)."""
        t, n = x.shape[:2]
        projected = F.linear(x.reshape(t, n, -1), w, b)
        if static is not None:
            projected = projected + F.linear(static.reshape(n, -1), w_static).unsqueeze(0)
        return projected

    def _initial(self, x, given) -> list[torch.Tensor]:
        """The initial states: the exposed bottoms, or what the previous forward ended with."""
        if self.expose:
            return [s.reshape(s.shape[1], s.shape[2]) for s in given]
        n = x.shape[1]
        states = []
        for name in self.states:
            s = self._carried.get(name)
            if s is None or s.shape[0] != n:  # first forward, or the batch changed: start from zeros
                s = x.new_zeros(n, self.hidden)
            states.append(s.to(device=x.device))
        return states

    def _finish(self, outputs, finals):
        """Keep the final states for the next forward (no gradient across forwards); build the tops."""
        if not self.expose:
            self._carried = {name: s.detach() for name, s in zip(self.states, finals)}
            return outputs
        return (outputs, *[s.unsqueeze(0) for s in finals])

    def _debug(self, t: int, **blobs) -> None:
        """recurrent_param.debug_info: the mean |value| of each step's blobs, as Caffe's unrolled net logs."""
        if self.debug_info and not torch.compiler.is_compiling():
            for blob, value in blobs.items():
                log.info("    [Forward] Layer %s_unit_%d, top blob %s_%d data: %.6g", self.name, t + 1, blob,
                         t + 1, value.detach().abs().mean().item())

    def _split_bottoms(self, bottoms):
        """(x, cont as T×N×1, x_static or None, exposed initial states)."""
        x, cont = bottoms[0], bottoms[1].detach()
        static = bottoms[2] if self.static else None
        return x, cont.to(x.dtype).unsqueeze(-1), static, bottoms[2 + self.static:]


@register("LSTM")
class LSTM(_Recurrent):
    """Long short-term memory over T timesteps (Caffe's LSTMLayer)."""

    blob_names = ("W_xc", "b_c", "W_xc_static", "W_hc")
    weights = ("W_xc", "W_xc_static", "W_hc")
    static_blob = "W_xc_static"
    states = ("h_0", "c_0")
    gate_factor = 4

    def _blob_shape(self, name, rows, static_shape):
        return {"W_xc": (rows, self.inputs), "b_c": (rows,), "W_hc": (rows, self.hidden),
                "W_xc_static": (rows, math.prod(static_shape[1:]) if static_shape else 0)}[name]

    def forward(self, *bottoms):
        x, cont, static, given = self._split_bottoms(bottoms)
        gates_x = self._inputs(x, static, self.W_xc, self.b_c, getattr(self, "W_xc_static", None))
        h, c = self._initial(x, given)
        w_hc_t = self.W_hc.t()
        hs = []
        for t in range(x.shape[0]):
            gates = torch.addmm(gates_x[t], cont[t] * h, w_hc_t)
            c, h = lstm_cell(c, gates, cont[t])
            hs.append(h)
            self._debug(t, c=c, h=h)
        return self._finish(torch.stack(hs), (h, c))


@register("RNN")
class RNN(_Recurrent):
    """Elman recurrent net with a tanh output layer (Caffe's RNNLayer)."""

    blob_names = ("W_xh", "b_h", "W_xh_static", "W_hh", "W_ho", "b_o")
    weights = ("W_xh", "W_xh_static", "W_hh", "W_ho")
    static_blob = "W_xh_static"
    states = ("h_0",)

    def _blob_shape(self, name, rows, static_shape):
        return {"W_xh": (rows, self.inputs), "b_h": (rows,), "W_hh": (rows, self.hidden),
                "W_ho": (rows, self.hidden), "b_o": (rows,),
                "W_xh_static": (rows, math.prod(static_shape[1:]) if static_shape else 0)}[name]

    def forward(self, *bottoms):
        x, cont, static, given = self._split_bottoms(bottoms)
        pre = self._inputs(x, static, self.W_xh, self.b_h, getattr(self, "W_xh_static", None))
        (h,) = self._initial(x, given)
        w_hh_t = self.W_hh.t()
        hs = []
        for t in range(x.shape[0]):
            h = torch.tanh(torch.addmm(pre[t], cont[t] * h, w_hh_t))
            hs.append(h)
            self._debug(t, h=h)
        outputs = torch.tanh(F.linear(torch.stack(hs), self.W_ho, self.b_o))
        return self._finish(outputs, (h,))
