"""The training loop: Caffe's Solver (src/caffe/solver.cpp: Init, Step, Solve, Test, Snapshot,
Restore, UpdateSmoothedLoss) with SGDSolver::ApplyUpdate, over compiled nets.

    solver = Solver(solver_param, "solver.prototxt", device="cuda:0")
    solver.solve()                       # or solver.step(n), solver.restore("x.solverstate")

Every iteration is Caffe's: test when due, zero the diffs, iter_size forward/backward passes, the
smoothed loss, the display, the learning rate for the current iteration and the update, ++iter,
then snapshot and signal requests. The log lines are Caffe's, so Caffe's log tools read them.

Determinism: with random_seed >= 0, torch's global RNG (dropout, DummyData fillers) is seeded
from (random_seed, iter) before every iteration and every test pass, so a run resumed from a
snapshot draws what the uninterrupted run drew; a SolverState has no room for an RNG state.

Extension points for data-parallel training (netspec.parallel): `rank`/`world_size` (only rank 0
builds test nets, tests, displays and snapshots, as Caffe's root_solver), `callbacks` with
`on_start()` and `on_gradients_ready()` (where Caffe's NCCL all-reduces the diffs), `agree` (rank 0's
snapshot/stop request on every rank, so that replicas stop together), and the overridable
`forward_backward`/`test_forward`.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from google.protobuf import text_format

from ..errors import NetspecError
from ..frontend import prepare_net, test_net_sources, train_net_source
from ..graph import DeviceMap, compile_net
from ..graph.devices import check_device
from ..layers.loss import label_error, label_flags
from ..formats.caffemodel import load_weights
from ..proto import pb
from . import debug, device_side, speed
from .device_side import DeferredReads
from .log import g6
from .lr_policy import learning_rate
from .plateau import Plateau, check_plateau
from .resume import restore_run_state, save_run_state
from .snapshot import (check_snapshot_prefix, lock_snapshot_prefix, read_snapshot, upgrade_snapshot_prefix,
                       write_snapshot)
from .update import make_update_rule

log = logging.getLogger(__name__)
f32 = np.float32


class NonFiniteLoss(NetspecError):
    """The loss became nan or inf: training stops before the update."""


def iteration_seed(seed: int, iter: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for (solver seed, iteration, stream); stream 0 trains, 1+i tests net i."""
    return int(np.random.SeedSequence([int(seed), int(iter), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


def default_device(sp: pb.SolverParameter) -> torch.device:
    """solver_mode/device_id as caffe.cpp reads them: GPU only when the file says so explicitly."""
    if sp.HasField("solver_mode") and sp.solver_mode == pb.SolverParameter.GPU:
        if torch.cuda.is_available():
            return check_device(torch.device("cuda", sp.device_id), "solver device_id:")
        log.warning("solver_mode is GPU but no CUDA device is available: training on the CPU")
    return torch.device("cpu")


def fit_device_map(spec: str | None, device: torch.device) -> DeviceMap:
    """The DeviceMap of `spec` with its default on `device`; names bound to GPUs this machine lacks
    are bound to `device` instead (an AlexNet's two columns then share one GPU)."""
    dm = DeviceMap(spec or None, default=device)
    n = torch.cuda.device_count()
    missing = sorted(k for k, v in dm.bindings.items() if v.type == "cuda" and (v.index or 0) >= n)
    if dm.catch_all is not None and dm.catch_all.type == "cuda" and (dm.catch_all.index or 0) >= n:
        dm.catch_all = device
    for k in missing:
        dm.bindings[k] = device
    if missing:
        where = "one GPU" if device.type == "cuda" else "the CPU"
        log.warning("device map '%s' names GPUs this machine lacks (%d visible): %s bound to %s "
                    "(both columns on %s)", spec, n, ", ".join(missing), device, where)
    return dm


MAX_DEFERRED = 1000    # device values kept for the next host read before one is made anyway


class Solver:
    """Caffe's Solver over CompiledNets: `net` (TRAIN), `test_nets`, `iter`, `current_step`."""

    def __init__(self, param: pb.SolverParameter, source=None, *, device=None, device_map: str | None = None,
                 solver_type: str | None = None, rank: int = 0, world_size: int = 1):
        self.param = pb.SolverParameter()
        self.param.CopyFrom(param)
        sp, self.source = self.param, source
        if solver_type is not None:
            sp.type = solver_type
        if sp.average_loss < 1:
            raise NetspecError(f"average_loss must be at least 1, found {sp.average_loss}", file=source)
        upgrade_snapshot_prefix(sp, source)
        check_snapshot_prefix(sp, source)
        self.force_prefix = False        # train even when another process uses the snapshot_prefix
        self.rank, self.world_size = rank, world_size
        self.device = check_device(device, "solver device") if device is not None else default_device(sp)
        self.device_map = fit_device_map(device_map or sp.device_map or None, self.device)
        if self.root:
            log.info("Initializing solver from parameters: \n%s", text_format.MessageToString(sp).rstrip())
        self.rule = make_update_rule(sp, file=source)
        if sp.random_seed >= 0:
            torch.manual_seed(sp.random_seed + rank)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets() if self.root else []   # Caffe: InitTestNets on the root only
        self.plateau = Plateau.start(sp) if sp.lr_policy == "plateau" else None
        if self.plateau is not None and self.root:
            check_plateau(sp, [{n: math.prod(net.blob_shapes[n]) for n in net.output_names}
                               for net in self.test_nets], source)
        log.info("Solver scaffolding done.")
        # Speed options before the histories: with channels_last they take the weights' layout, so
        # the multi-tensor updates read all three alike.
        self._autocast, self._scaler = speed.configure(self.net, sp, self.device, source)
        self._devices = speed.net_devices(self.net, self.device)   # autocast on the layers' devices
        self.rule.init(self.net.learnable_params())
        for w in sp.weights:
            self.load_weights(w)
        self.iter = self.current_step = 0
        self.callbacks: list = []
        self.action_fn = None            # () -> "none" | "snapshot" | "stop" (signals)
        self.agree = None                # request -> rank 0's request (set by netspec.parallel)
        self.share_floats = None         # floats -> rank 0's floats (set by netspec.parallel)
        self.requested_early_exit = False
        self.losses: list = []
        self.smoothed_loss = f32(0)
        self.last_snapshot: tuple[str, str] | None = None
        self.progress = None             # tqdm-like: .update(n), set by the CLI
        self._outputs: dict = {}
        self._fns: dict = {}
        self._inputs: dict = {}
        # The device-side update guard is for devices that queue work (GPUs); on the CPU it is a test.
        self._host_only = all(d.type == "cpu" for d in [*self._devices, self.device])
        self.deferred = DeferredReads()  # device values read at display time (losses, clip, overflow)
        self._bad = None                 # on the device: a loss since the last read was not finite

    @property
    def root(self) -> bool:
        return self.rank == 0

    # ---- building --------------------------------------------------------------------------------
    def _net_source(self, src):
        """The file a net came from, for messages and relative paths (not the solver file itself)."""
        return src.source if src.source and str(src.source) != str(self.source) else None

    def build_net(self, src, phase: int):
        """Filter, validate and compile one net the solver names (overridden by the pycaffe solver)."""
        source = self._net_source(src)
        net_param = prepare_net(src.param, src.state, source)
        seed = self.param.random_seed if self.param.random_seed >= 0 else None
        return compile_net(net_param, phase, device_map=self.device_map, device=self.device, seed=seed,
                           source=source)

    def _init_train_net(self):
        src = train_net_source(self.param, self.source)
        log.info("Creating training net from %s", src.source or "the solver's net_param")
        return self.build_net(src, pb.TRAIN)

    def _init_test_nets(self) -> list:
        sources = test_net_sources(self.param, self.source)
        if sources and self.param.test_interval <= 0:
            raise NetspecError(f"{len(sources)} test net(s) but test_interval is {self.param.test_interval} "
                               "(it must be positive)", file=self.source)
        nets = []
        for i, src in enumerate(sources):
            log.info("Creating test net (#%d) specified by %s", i, src.source or "the solver's net_param")
            nets.append(self.build_net(src, pb.TEST))
        return nets

    def load_weights(self, weights: str) -> None:
        """Fine-tuning: copy layers by name from each comma-separated .caffemodel into every net."""
        for path in str(weights).split(","):
            for net in [self.net, *self.test_nets]:
                report = load_weights(net.params(), path)
                log.info("%s net: %s", "Train" if net is self.net else "Test", report.summary())

    # ---- running the nets --------------------------------------------------------------------------
    def _fn(self, net):
        key = id(net)
        if key not in self._fns:
            wanted = list(dict.fromkeys([*net.output_names, *net.loss_weights]))
            self._fns[key] = speed.compiled(net.graph_module(outputs=wanted), self.param)
            self._inputs[key] = [torch.zeros(net.blob_shapes[b], device=self.device) for b in net.input_names]
            if net.input_names and self.root:
                log.warning("net '%s' reads input blob(s) %s that nothing feeds during training; they stay "
                            "zero (use a Data layer, Solver.feed, or the pycaffe API)",
                            net.name, ", ".join(net.input_names))
        return self._fns[key], self._inputs[key]

    def feed(self, net=None, **arrays) -> None:
        """Write arrays into the Input blobs of `net` (default: the train net); every later forward reads
        them (nets with Data layers feed themselves)."""
        net = self.net if net is None else net
        _, inputs = self._fn(net)
        by_name = dict(zip(net.input_names, inputs))
        for name, value in arrays.items():
            if name not in by_name:
                raise NetspecError(f"net '{net.name}' has no input blob '{name}' (inputs: "
                                   f"{', '.join(net.input_names) or 'none'})")
            by_name[name].copy_(torch.as_tensor(value, dtype=torch.float32))

    def _forward(self, net) -> dict:
        fn, inputs = self._fn(net)
        with speed.autocast(self._devices, self._autocast):
            return fn(*inputs)

    def forward_backward(self) -> torch.Tensor | float:
        """One forward and backward pass of the train net (diffs accumulate); the loss (a float32
        0-dim tensor, left on its device so that the host does not wait for it)."""
        if self.param.debug_info and self.root:
            _, inputs = self._fn(self.net)
            with speed.autocast(self._devices, self._autocast):
                blobs, loss = debug.forward_backward(self.net, dict(zip(self.net.input_names, inputs)),
                                                     self._scaler.scaled if self._scaler else (lambda x: x))
            self._outputs = {b: blobs[b].detach() for b in self.net.output_names}
            return loss.detach()
        blobs = self._forward(self.net)
        loss = self.net.total_loss(blobs).float()
        (self._scaler.scaled(loss) if self._scaler else loss).backward()
        self._outputs = {b: blobs[b].detach() for b in self.net.output_names}
        return loss.detach()

    def train_outputs(self) -> dict:
        """The train net's output blobs after the last forward (for the display)."""
        return self._outputs

    @torch.no_grad()
    def test_forward(self, i: int) -> tuple[dict, float]:
        """One forward pass of test net `i`: its output blobs and its loss."""
        net = self.test_nets[i]
        blobs = self._forward(net)
        loss = float(net.total_loss(blobs)) if net.loss_weights and self.param.test_compute_loss else 0.0
        return {b: blobs[b] for b in net.output_names}, loss

    def forward_loss(self) -> float:
        """A forward pass of the train net only (Solve's last display)."""
        with torch.no_grad():
            blobs = self._forward(self.net)
            self._outputs = {b: blobs[b].detach() for b in self.net.output_names}
            return float(self.net.total_loss(blobs))

    def clear_param_diffs(self) -> None:
        for p in self.net.learnable_params():
            if p.tensor.grad is not None:
                p.tensor.grad.zero_()

    def _seed(self, stream: int) -> None:
        if self.param.random_seed >= 0:
            torch.manual_seed(iteration_seed(self.param.random_seed + self.rank, self.iter, stream))

    # ---- Caffe's loop ------------------------------------------------------------------------------
    def requested_action(self) -> str:
        return self.action_fn() if self.action_fn is not None else "none"

    def _agreed(self, request: str, now: bool = False) -> str:
        """The request every rank acts on: rank 0's when there are several processes (`now`: agreed
        at once, else possibly some iterations later so that no rank waits on its device)."""
        return self.agree(request, now=now) if self.agree is not None else request

    def step(self, iters: int) -> None:
        """Caffe's Solver::Step: `iters` iterations (fewer if a stop is requested)."""
        sp = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self.losses, self.smoothed_loss = [], f32(0)
        timer, iterations_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.clear_param_diffs()
            if (sp.test_interval and self.iter % sp.test_interval == 0
                    and (self.iter > 0 or sp.test_initialization)):
                self.deferred.flush()
                if self.root:
                    self.test_all()
                self._share_plateau()
                if self._agreed("stop" if self.requested_early_exit else "none", now=True) == "stop":
                    self.requested_early_exit = True
                    break
            for cb in self.callbacks:
                cb.on_start()
            display = sp.display and self.iter % sp.display == 0
            self._seed(0)
            self._watch_loss(self._iteration_loss(), start_iter)
            self._watch_labels()
            if display or len(self.deferred) >= MAX_DEFERRED:
                # the losses since the last display: one host read (also without display lines, every
                # MAX_DEFERRED values, so that a long run neither piles them up nor learns of a NaN late)
                self.deferred.flush()
            if display and self.root:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iterations_last) / (lapse or 1)
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, g6(per_s),
                         g6(lapse), sp.display, g6(self.smoothed_loss))
                timer, iterations_last = time.perf_counter(), self.iter
                self._log_outputs("Train", self.net, self.train_outputs())
            for cb in self.callbacks:
                cb.on_gradients_ready()
            self.apply_update()
            self.iter += 1
            if self.progress is not None:
                self.progress.update(1)
            request = self._agreed(self.requested_action())
            if (sp.snapshot and self.iter % sp.snapshot == 0 and self.root) or request == "snapshot":
                self.deferred.flush()   # never snapshot weights that a non-finite loss stopped
                self.snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break
        self.deferred.flush()

    def solve(self, resume_file=None) -> None:
        """Caffe's Solver::Solve: train to max_iter, snapshot, then a last display and test. While it
        runs, the snapshot_prefix is locked against another process (`force_prefix`: warn instead)."""
        lock = lock_snapshot_prefix(self.param, self.force_prefix, self.source) if self.root else None
        try:
            self._solve(resume_file)
        finally:
            if lock is not None:
                lock.release()

    def _solve(self, resume_file=None) -> None:
        sp = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", sp.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(sp.max_iter - self.iter)
        if sp.snapshot_after_train and (not sp.snapshot or self.iter % sp.snapshot != 0):
            if sp.HasField("snapshot_prefix"):
                self.snapshot()
            else:
                log.warning("no snapshot after training: the solver has no snapshot_prefix")
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if self.root and sp.display and self.iter % sp.display == 0:
            self._seed(0)
            loss = f32(self.forward_loss())
            self._check_finite(loss)
            self.update_smoothed_loss(loss, start_iter, sp.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, g6(self.smoothed_loss))
        if self.root and sp.test_interval and self.iter % sp.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _iteration_loss(self) -> torch.Tensor:
        """iter_size forward/backward passes; their mean loss in float32, on the loss's device."""
        n = max(self.param.iter_size, 1)
        loss = None
        for _ in range(n):
            value = torch.as_tensor(self.forward_backward(), dtype=torch.float32)
            loss = value if loss is None else loss + value.to(loss.device)
        return loss / float(n) if n > 1 else loss

    def _watch_loss(self, loss: torch.Tensor, start_iter: int) -> None:
        """Queue this iteration's loss for the next host read, and keep on the device whether any
        loss since then was non-finite: apply_update's guard then leaves the weights alone."""
        bad = ~torch.isfinite(loss)
        self._bad = bad if self._bad is None else self._bad | bad.to(self._bad.device)
        it, step, average_loss = self.iter, self.current_step, self.param.average_loss

        def read(value) -> None:
            if not math.isfinite(float(value)):
                # The guard skipped this iteration's update and every later one: the state is this
                # iteration's, before its update.
                self.iter, self.current_step, self._bad = it, step, None
                self._check_finite(f32(value))
            self.update_smoothed_loss(f32(value), start_iter, average_loss, iter=it)

        self.deferred.add(loss, read)

    def update_smoothed_loss(self, loss, start_iter: int, average_loss: int, iter: int | None = None) -> None:
        """The display loss: the mean of the last `average_loss` iterations' losses (float32);
        `iter` is the loss's iteration (default: the current one)."""
        loss = f32(loss)
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            size = f32(len(self.losses))
            self.smoothed_loss = f32((self.smoothed_loss * (size - f32(1)) + loss) / size)
        else:
            idx = ((self.iter if iter is None else iter) - start_iter) % average_loss
            self.smoothed_loss = f32(self.smoothed_loss + (loss - self.losses[idx]) / f32(average_loss))
            self.losses[idx] = loss

    def apply_update(self) -> None:
        """SGDSolver::ApplyUpdate: the rate for the current iteration (logged), then every blob's update."""
        sp = self.param
        if self.plateau is not None:
            rate = self.plateau.lr
        else:
            rate, self.current_step = learning_rate(sp, self.iter, self.current_step, file=self.source)
        if sp.display and self.iter % sp.display == 0 and self.root:
            log.info("Iteration %d, lr = %s", self.iter, g6(rate))
        params = self.net.learnable_params()
        ok = None if self._bad is None else ~self._bad
        if self._scaler is not None:
            unscaled = self._scaler.unscale_on_device([p.tensor for p in params], self.deferred)
            ok = unscaled if ok is None else ok & unscaled.to(ok.device)
        if ok is not None and self._host_only:
            # Nothing is queued on a CPU: reading the flag costs nothing, and skipping the update
            # here spares the guarded update's copies of the weights and histories.
            if not bool(ok):
                return
            ok = None
        before = debug.before_update(self.net) if sp.debug_info and self.root else None
        self.rule.apply(params, rate, self.iter, ok=ok, defer=self.deferred)
        if before is not None:
            debug.after_update(self.net, before)

    def _check_finite(self, loss) -> None:
        if math.isfinite(float(loss)):
            return
        last = self.last_snapshot[1] if self.last_snapshot else "none written in this run"
        raise NonFiniteLoss(f"iteration {self.iter}: the loss is {g6(loss)}; training stopped before the "
                            f"update (last snapshot: {last}). Try a smaller base_lr or clip_gradients.")

    def _log_outputs(self, kind: str, net, outputs: dict, mean_over: int = 1) -> None:
        """Caffe's '    Train net output #k: name = v (* w = v*w loss)' lines, one per value."""
        k = 0
        for name, value in outputs.items():
            w = net.loss_weights.get(name, 0.0)
            values = value.detach().float().reshape(-1).cpu().numpy() if isinstance(value, torch.Tensor) \
                else np.asarray(value, np.float32).reshape(-1)
            for v in values:
                v = f32(v) / f32(mean_over) if mean_over != 1 else f32(v)
                extra = f" (* {g6(w)} = {g6(f32(w) * v)} loss)" if w else ""
                log.info("    %s net output #%d: %s = %s%s", kind, k, name, g6(v), extra)
                k += 1

    # ---- testing -----------------------------------------------------------------------------------
    def test_all(self) -> None:
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def share_trained_layers(self, target) -> None:
        """Caffe's Net::ShareTrainedLayersWith: `target`'s blobs of same-named layers become the train
        net's (the same memory, so later updates show through)."""
        source_params = self.net.params()
        for name, blobs in target.params().items():
            src = source_params.get(name)
            if src is None:
                continue
            if len(src) != len(blobs):
                raise NetspecError(f"cannot share weights: {len(src)} blobs in the train net, {len(blobs)} "
                                   "in the test net", layer=name)
            for j, (s, t) in enumerate(zip(src, blobs)):
                if tuple(s.shape) != tuple(t.shape):
                    raise NetspecError(f"cannot share blob {j}: shape {tuple(s.shape)} in the train net, "
                                       f"{tuple(t.shape)} in the test net", layer=name)
                if t.data_ptr() != s.data_ptr():
                    t.data = s.data

    def test(self, i: int) -> None:
        """Caffe's Solver::Test: test_iter[i] passes of test net i; the mean of every output value."""
        sp = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, i)
        net = self.test_nets[i]
        self.share_trained_layers(net)
        scores: dict = {}
        loss = f32(0)
        for k in range(sp.test_iter[i]):
            self._handle_requests_while_testing()
            if self.requested_early_exit:
                break
            self._seed(1 + i + k * len(self.test_nets))
            outputs, iter_loss = self.test_forward(i)
            loss = f32(loss + f32(iter_loss))
            for name, value in outputs.items():
                v = value.detach().float().reshape(-1)
                scores[name] = v.clone() if name not in scores else scores[name] + v
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return
        self._check_labels(net, f"test net #{i} at iteration {self.iter}")
        if sp.test_compute_loss:
            log.info("Test loss: %s", g6(loss / f32(sp.test_iter[i])))
        self._log_outputs("Test", net, scores, mean_over=sp.test_iter[i])
        if self.plateau is not None and i == sp.plateau_param.test_net:
            value = f32(scores[sp.plateau_param.output][0].item()) / f32(sp.test_iter[i])
            why = self.plateau.observe(float(value))
            if why:
                log.info("Iteration %d, lr = %s: test net #%d %s", self.iter, g6(self.plateau.lr), i, why)

    def _watch_labels(self) -> None:
        """Queue the train net's label-range flags (kept on the device by its loss and accuracy layers)
        for the next display read; the first iteration whose flags show a label is the one named."""
        flags = label_flags(self.net)
        if not flags:
            return
        it = self.iter

        def read(values) -> None:
            for (layer, _), value in zip(flags, values.reshape(len(flags), 2)):
                error = label_error(layer, value, f"iteration {it}")
                if error is not None:
                    raise error

        self.deferred.add(device_side.stack([f for _, f in flags]), read)

    @staticmethod
    def _check_labels(net, where: str) -> None:
        for layer, flag in label_flags(net):
            error = label_error(layer, flag.tolist(), where)
            if error is not None:
                raise error

    def _share_plateau(self) -> None:
        """Every rank applies the plateau decision rank 0 made from its test pass."""
        if self.plateau is not None and self.share_floats is not None:
            self.plateau.load_floats(self.share_floats(self.plateau.as_floats()))

    def _handle_requests_while_testing(self) -> None:
        while (request := self.requested_action()) != "none":
            if request == "snapshot":
                self.snapshot()
            elif request == "stop":
                self.requested_early_exit = True

    # ---- snapshots ---------------------------------------------------------------------------------
    def snapshot(self) -> tuple[str, str]:
        """Write `<prefix>_iter_N.caffemodel` and `.solverstate` (Caffe's Solver::Snapshot); only
        rank 0 writes, the other replicas hold the same weights."""
        if not self.root:
            return self.last_snapshot
        self.last_snapshot = write_snapshot(self.param, self.net, self.rule, self.iter, self.current_step,
                                            extend_state=self.save_state_extensions)
        return self.last_snapshot

    def save_state_extensions(self, state: pb.SolverState) -> None:
        """Fill netspec's SolverState extension fields (Caffe ignores them) before a snapshot is written."""
        if self.plateau is not None:
            state.plateau_state.CopyFrom(self.plateau.to_proto())
        save_run_state(self, state)

    def restore_state_extensions(self, state: pb.SolverState) -> None:
        """Apply netspec's SolverState extension fields; a Caffe-written state has none of them."""
        if self.plateau is not None:
            if state.HasField("plateau_state"):
                self.plateau.load(state.plateau_state)
            else:
                log.info("the solver state has no plateau_state: the plateau rule starts afresh at base_lr")
        restore_run_state(self, state)

    def restore(self, state_file) -> None:
        """Caffe's Restore: iter, current_step, history, and the weights of its learned_net."""
        state = read_snapshot(state_file, self.net, self.rule)
        self.iter, self.current_step = state.iter, state.current_step
        self.restore_state_extensions(state)
