"""Signals as solver actions (Caffe's include/caffe/util/signal_handler.h and tools/caffe.cpp's
-sigint_effect / -sighup_effect flags).

A handler only sets a flag; the solver asks for the requested action between iterations (and
between test iterations), as Caffe's Solver::GetRequestedAction does. SIGTERM counts as SIGINT, so a
job scheduler's polite kill snapshots like Ctrl-C. A second SIGINT/SIGTERM before the first was
acted on raises KeyboardInterrupt, so a stuck run can still be stopped at once.
"""
from __future__ import annotations

import logging
import signal

from ..errors import NetspecError

log = logging.getLogger(__name__)

EFFECTS = ("stop", "snapshot", "none")


def check_effect(effect: str, flag: str) -> str:
    if effect not in EFFECTS:
        raise NetspecError(f"-{flag}: expected one of {', '.join(EFFECTS)}, found '{effect}'")
    return effect


class SignalHandler:
    """Install with `with SignalHandler("stop", "snapshot") as h:`; `h.action()` -> an effect."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot"):
        self.sigint_effect = check_effect(sigint_effect, "sigint_effect")
        self.sighup_effect = check_effect(sighup_effect, "sighup_effect")
        self.got_sigint = self.got_sighup = False
        self._old: dict = {}

    def _on_interrupt(self, signum, frame):
        if self.got_sigint:
            raise KeyboardInterrupt
        self.got_sigint = True

    def _on_hangup(self, signum, frame):
        self.got_sighup = True

    def __enter__(self) -> "SignalHandler":
        wanted = [(signal.SIGINT, self._on_interrupt), (signal.SIGTERM, self._on_interrupt)]
        if hasattr(signal, "SIGHUP"):
            wanted.append((signal.SIGHUP, self._on_hangup))
        for sig, fn in wanted:
            self._old[sig] = signal.signal(sig, fn)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def action(self) -> str:
        """The action a signal asked for since the last call ('none' if none)."""
        if self.got_sigint:
            self.got_sigint = False
            log.info("Caught an interrupt signal: %s requested", self.sigint_effect)
            return self.sigint_effect
        if self.got_sighup:
            self.got_sighup = False
            log.info("Caught SIGHUP: %s requested", self.sighup_effect)
            return self.sighup_effect
        return "none"
