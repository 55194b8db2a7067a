"""The environment ``ripple up`` gives its Ray head so that every worker process imports Ripple's actor
modules as it starts (:func:`orchestrator.ops.local.preload_env`), and that those modules are importable and
name what a replica's start imports."""

from __future__ import annotations

import importlib

import pytest

from orchestrator.core.standby import PRELOADED_MODULES
from orchestrator.ops.local import PRELOAD_ENV, preload_env

pytestmark = pytest.mark.timeout(20)


def test_every_worker_process_preloads_the_replica_and_queue_modules() -> None:
    assert preload_env({}) == {"RAY_preload_python_modules": "actors.replica,actors.job_queue"}
    assert PRELOAD_ENV == "RAY_preload_python_modules", "Ray's setting, read by the raylet from its env"


def test_an_operator_can_choose_the_modules_or_none() -> None:
    assert preload_env({PRELOAD_ENV: "mypkg.models"}) == {PRELOAD_ENV: "mypkg.models"}
    assert preload_env({PRELOAD_ENV: ""}) == {PRELOAD_ENV: ""}


def test_the_modules_import_and_hold_the_actor_classes_a_replica_start_needs() -> None:
    # Ray's preload catches only ImportError: a module that raised anything else would stop every worker.
    modules = [importlib.import_module(name) for name in PRELOADED_MODULES]
    assert {m.__name__ for m in modules} == {"actors.replica", "actors.job_queue"}
    assert hasattr(modules[0], "WorkerReplica") and hasattr(modules[1], "JobQueue")
