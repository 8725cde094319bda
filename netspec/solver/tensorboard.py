"""`netspec train --tensorboard DIR`: the training run as TensorBoard scalars (torch.utils.tensorboard).

The solver already says everything a curve needs in its Caffe-format log ("Iteration N, loss = L",
"Train net output #k: name = v", "Iteration N, lr = r", "Iteration N, Testing net (#k)", "Test net
output #k: name = v"), so a logging handler reads those messages as `netspec plot` reads a log file
(the same patterns, netspec/solver/log.py) and writes them as scalars: `loss` (the displayed loss,
smoothed over average_loss), `lr`, `train/<output>` and `test<k>/<output>` per test net (with
`test<k>/test_loss` when test_compute_loss prints one), at their iterations. The
solver loop is untouched, and what TensorBoard shows is exactly what the log says.
"""
from __future__ import annotations

import contextlib
import logging

from ..errors import NetspecError
from .log import _ITERATION, _LR, _OUTPUT, _TEST_LOSS, _TESTING, _TRAIN_LOSS


def summary_writer(logdir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise NetspecError("--tensorboard needs the tensorboard package: pip install 'netspec[tensorboard]'") \
            from None
    return SummaryWriter(str(logdir))


class ScalarHandler(logging.Handler):
    """Turns the solver's progress messages into scalars of `writer`."""

    def __init__(self, writer):
        super().__init__(logging.INFO)
        self.writer, self.iteration, self.test_net = writer, None, None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._read(record.getMessage())
        except Exception:   # a handler must not break training; logging reports it
            self.handleError(record)

    def _read(self, msg: str) -> None:
        if (m := _TESTING.search(msg)):
            self.iteration, self.test_net = int(m[1]), int(m[2])
        elif (m := _TRAIN_LOSS.search(msg)):
            self.iteration, self.test_net = int(m[1]), None
            self.writer.add_scalar("loss", float(m[2]), self.iteration)
        elif (m := _LR.search(msg)):
            self.writer.add_scalar("lr", float(m[2]), int(m[1]))
        elif (m := _ITERATION.search(msg)):
            self.iteration = int(m[1])
        if self.iteration is None:
            return
        if (m := _OUTPUT.search(msg)):
            tag = "train" if m[1] == "Train" else f"test{self.test_net}"
            if m[1] == "Train" or self.test_net is not None:
                self.writer.add_scalar(f"{tag}/{m[3]}", float(m[4]), self.iteration)
        elif (m := _TEST_LOSS.search(msg)) and self.test_net is not None:
            self.writer.add_scalar(f"test{self.test_net}/test_loss", float(m[1]), self.iteration)


@contextlib.contextmanager
def tensorboard_scalars(logdir, logger: str = "netspec"):
    """While inside, `logger`'s INFO messages from the solver become scalars in `logdir`."""
    writer = summary_writer(logdir)
    handler = ScalarHandler(writer)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield writer
    finally:
        target.removeHandler(handler)
        writer.close()
