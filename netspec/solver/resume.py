"""Exact resume: the parts of a run's state Caffe's SolverState has no room for.

Caffe restores the weights, the history, `iter` and `current_step`; its Data layers restart at record
0 and its random generators afresh, so a resumed run differs from the uninterrupted one. netspec
writes, in SolverState extension fields that Caffe ignores:
  data_state      each Data layer's place (batches read, cursor record, crop/mirror seed), per net:
                  "train", "test#0", "test#1", ...
  rng_state       torch's CPU generator (dropout and fillers when random_seed < 0)
  cuda_rng_state  each CUDA device's generator, where CUDA has been used
and restores them, so that training resumed from a snapshot reproduces the uninterrupted run bit for
bit on the CPU. A state without them (written by Caffe) resumes as Caffe does.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..proto import pb

log = logging.getLogger(__name__)


def _data_layers(net):
    return [step.layer for step in net.steps if hasattr(step.layer, "data_state")]


def _nets(solver) -> list[tuple[str, object]]:
    return [("train", solver.net)] + [(f"test#{i}", n) for i, n in enumerate(solver.test_nets)]


def save_run_state(solver, state: pb.SolverState) -> None:
    """Fill data_state, rng_state and cuda_rng_state of `state` from `solver`."""
    for name, net in _nets(solver):
        for layer in _data_layers(net):
            state.data_state.append(layer.data_state(name))
    state.rng_state = torch.get_rng_state().numpy().tobytes()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.cuda_rng_state.extend(s.numpy().tobytes() for s in torch.cuda.get_rng_state_all())


def restore_run_state(solver, state: pb.SolverState) -> None:
    """Apply what save_run_state wrote; fields a Caffe-written state lacks are left as Caffe would."""
    saved = {(d.net, d.layer): d for d in state.data_state}
    for name, net in _nets(solver):
        for layer in _data_layers(net):
            found = saved.get((name, layer.name))
            if found is not None:
                layer.restore_data_state(found, rank=solver.rank)
            elif saved or name == "train":
                log.info("%s net: no data_state for layer '%s' in the solver state: it reads from its "
                         "first record, as Caffe does", name.split("#")[0], layer.name)
    if state.rng_state:
        torch.set_rng_state(torch.from_numpy(np.frombuffer(state.rng_state, np.uint8).copy()))
    if state.cuda_rng_state and torch.cuda.is_available():
        states = [torch.from_numpy(np.frombuffer(s, np.uint8).copy()) for s in state.cuda_rng_state]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
