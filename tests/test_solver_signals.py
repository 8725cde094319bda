"""Signals as solver actions (Caffe's -sigint_effect / -sighup_effect): flags set by the handlers,
consumed once by `action()`; SIGTERM counts as SIGINT; a second SIGINT interrupts at once."""
import os
import signal

import pytest

from netspec.errors import NetspecError
from netspec.solver.signals import SignalHandler

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


def test_default_effects_and_one_shot_actions():
    with SignalHandler() as h:
        assert h.action() == "none"
        os.kill(os.getpid(), signal.SIGHUP)
        assert h.action() == "snapshot" and h.action() == "none"
        os.kill(os.getpid(), signal.SIGINT)
        assert h.action() == "stop" and h.action() == "none"
        os.kill(os.getpid(), signal.SIGTERM)
        assert h.action() == "stop"


def test_configured_effects():
    with SignalHandler("snapshot", "none") as h:
        os.kill(os.getpid(), signal.SIGINT)
        assert h.action() == "snapshot"
        os.kill(os.getpid(), signal.SIGHUP)
        assert h.action() == "none"


def test_second_interrupt_raises_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with SignalHandler():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_unknown_effect_is_refused():
    with pytest.raises(NetspecError, match="-sigint_effect: expected one of stop, snapshot, none, found 'halt'"):
        SignalHandler("halt")
