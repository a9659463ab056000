"""train.preempt.StopRequest: the first stop signal is remembered, later ones never kill the exit.

One preemption delivers several signals (SLURM signals every task, submitit's ``_interrupt`` sends
SIGTERM then USR2, which the wrapper forwards as USR1). A second one arriving while the stopped
trainer saves or exits must not take the default action (death, exit -10) -- neither after
``close`` restored the handlers nor during interpreter shutdown, which resets Python handlers to
SIG_DFL. The subprocess tests send each signal from the process itself at a fixed point of its
exit path: deterministic, no sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from train.preempt import PREEMPT_EXIT_CODE, StopRequest
from slurm.cluster.local import REPO

# The stand-in for `python -m train`: stop on SIGTERM, a forwarded SIGUSR1 while "checkpointing",
# more of both after the handler is gone, and one during module teardown (after Python's signal
# handling was shut down: only a disposition of SIG_IGN still protects the process there).
EXITING_TRAINER = textwrap.dedent(
    """
    import os, signal, sys
    from train.preempt import PREEMPT_EXIT_CODE, StopRequest

    def send(sig):
        os.kill(os.getpid(), sig)  # to itself: delivered before kill() returns

    class LateSignal:  # __del__ runs when __main__ is torn down, after signal handling was shut down
        def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.SIGUSR1, write=os.write):
            kill(pid, sig)
            write(2, b"survived a SIGUSR1 during interpreter shutdown\\n")

    def train(close):
        stop = StopRequest().install()
        send(signal.SIGTERM)  # the stop
        assert stop.requested and stop.signum == signal.SIGTERM
        send(signal.SIGUSR1)  # checkpointing: the wrapper forwards submitit's USR2
        send(signal.SIGTERM)
        if close == "close":  # what train.run.main does on return
            stop.close()
            send(signal.SIGUSR1)
            send(signal.SIGTERM)
        return PREEMPT_EXIT_CODE

    late = LateSignal()
    sys.exit(train(sys.argv[1]))
    """
)


@pytest.mark.parametrize("close", ["close", "no-close"])
def test_second_signal_during_exit_does_not_kill_the_stopped_trainer(tmp_path, close):
    script = tmp_path / "exiting_trainer.py"
    script.write_text(EXITING_TRAINER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), close], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == PREEMPT_EXIT_CODE, (
        f"exit {proc.returncode} (-10 = killed by SIGUSR1, -15 = by SIGTERM)\n{proc.stderr}")
    assert "[train] got SIGTERM: checkpointing at the next step" in proc.stderr
    assert "[train] got SIGUSR1 while already stopping: ignored" in proc.stderr
    assert "survived a SIGUSR1 during interpreter shutdown" in proc.stderr  # the teardown signal was sent


def test_stop_request_restores_handlers_and_keeps_ignoring_after_a_stop():
    """In-process: without a stop the previous handlers come back as they were; after a stop a
    caller's own handler comes back too, but a default (die) disposition becomes SIG_IGN."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    mine = lambda *a: None  # noqa: E731
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, mine)
        with StopRequest() as stop:
            assert not stop.requested
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and signal.getsignal(signal.SIGUSR1) is mine
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with StopRequest() as stop:
                os.kill(os.getpid(), sig)
                os.kill(os.getpid(), signal.SIGUSR1 if sig == signal.SIGTERM else signal.SIGTERM)
                assert stop.requested and stop.signum == sig  # the first one counts
            assert signal.getsignal(signal.SIGUSR1) is mine
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
