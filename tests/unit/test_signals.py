"""Stopping a job from outside: SIGTERM (a scheduler, `ray job stop`, `timeout`) is handled as
Ctrl-C, and Ray Train's Ctrl-C handler does not outlive its run."""

from __future__ import annotations

import os
import signal

import pytest

from pipeline.common.ray_cluster import stop_on_sigterm_as_on_ctrl_c


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0.1)  # nothing to wait for: gives the Python handler its turn


@pytest.mark.parametrize("on_ctrl_c", [signal.default_int_handler, signal.SIG_IGN])
def test_sigterm_raises_keyboard_interrupt_even_where_ctrl_c_is_ignored(on_ctrl_c, restore_handlers):
    # A job started in the background of a non-interactive shell ignores SIGINT; SIGTERM must still stop it.
    signal.signal(signal.SIGINT, on_ctrl_c)
    stop_on_sigterm_as_on_ctrl_c()
    with pytest.raises(KeyboardInterrupt):
        _sigterm()


def test_sigterm_goes_to_the_ctrl_c_handler_in_place(restore_handlers):
    """Ray Train's, while a run trains: it aborts the run, which then ends as a Ctrl-C'd one."""
    called = []
    signal.signal(signal.SIGINT, lambda signum, frame: called.append(signum))
    stop_on_sigterm_as_on_ctrl_c()
    _sigterm()
    assert called == [signal.SIGINT]


def test_the_ctrl_c_handler_is_this_process_own_again_after_the_fit(restore_handlers):
    from pipeline.train.launch import _own_ctrl_c_handler_after

    signal.signal(signal.SIGINT, signal.default_int_handler)
    with _own_ctrl_c_handler_after():
        signal.signal(signal.SIGINT, lambda signum, frame: None)  # as Ray Train's fit does, and leaves it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
