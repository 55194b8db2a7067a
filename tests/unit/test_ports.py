"""The ports the tests' servers and Ray nodes get (``tests/ports.py``)."""

from __future__ import annotations

from tests import ports


def test_a_port_is_never_handed_out_twice_in_a_process() -> None:
    picked = [ports.free_port() for _ in range(300)]  # ~97% sure to repeat one if drawn independently
    assert len(set(picked)) == len(picked)
    assert all(ports.RAY_WORKER_PORTS_MAX < p < ports._ephemeral_low() for p in picked)
