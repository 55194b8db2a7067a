"""Settings: defaults < YAML < env < flags; errors name the setting and echo its value; secrets masked."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.backoff import ExponentialBackoff

from orchestrator.auth import AuthConfig
from orchestrator.boot import boot_config
from orchestrator.config import AutoscalerSettings, QueueConfig, Settings, load_settings
from orchestrator.core.autoscale import AutoscaleConfig, AutoscalerState, Blocked, ScaleUp, decide
from orchestrator.core.autoscale.snapshot import build_snapshot
from orchestrator.core.errors import ConfigError
from orchestrator.core.models import EndpointSpec
from orchestrator.store.autoscaler import RedisAutoscalerStore
from orchestrator.store.finals import SyncFinals
from orchestrator.store.redis import RETRIED_ERRORS, RedisStore, restart_retry

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No RIPPLE_* variable from the outside leaks into these tests."""
    for name in list(os.environ):
        if name.startswith(("RIPPLE_", "_RIPPLE_")):
            monkeypatch.delenv(name)
    yield
    assert "_RIPPLE_CONFIG_FILE" not in os.environ, "load_settings restores the environment"


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ripple.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert (s.host, s.port, s.data_dir, s.key_prefix) == ("127.0.0.1", 8000, Path(".ripple"), "ripple:")
    assert s.redis_url is None and s.api_key is None and not s.insecure
    assert s.autoscaler.enabled and s.autoscaler.interval_s == 2.0


def test_precedence_defaults_yaml_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "port: 9001\nhost: 0.0.0.0\nnamespace: fromyaml\nlog_level: debug\n")
    s = load_settings(path)
    assert (s.port, s.host, s.namespace, s.log_level) == (9001, "0.0.0.0", "fromyaml", "DEBUG")
    monkeypatch.setenv("RIPPLE_PORT", "9002")
    monkeypatch.setenv("RIPPLE_NAMESPACE", "fromenv")
    s = load_settings(path)
    assert (s.port, s.host, s.namespace) == (9002, "0.0.0.0", "fromenv"), "env over YAML, YAML over defaults"
    s = load_settings(path, port=9003, host=None)
    assert (s.port, s.host, s.namespace) == (9003, "0.0.0.0", "fromenv"), "flags over env; None flags ignored"
    assert s.sweep_interval_s == 0.5, "untouched settings keep their defaults"


def test_yaml_from_ripple_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_CONFIG", str(write_yaml(tmp_path, "port: 9100\n")))
    assert load_settings().port == 9100
    other = tmp_path / "other.yaml"
    other.write_text("port: 9200\n")
    assert load_settings(other).port == 9200, "--config wins over RIPPLE_CONFIG"


def test_nested_settings_merge_across_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "autoscaler:\n  interval_s: 5\n  max_gpus: 4\n")
    monkeypatch.setenv("RIPPLE_AUTOSCALER__ENABLED", "false")
    s = load_settings(path)
    assert (s.autoscaler.enabled, s.autoscaler.interval_s, s.autoscaler.max_gpus) == (False, 5.0, 4)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("env", "value", "setting"),
    [
        ("RIPPLE_PORT", "abc", "port"),
        ("RIPPLE_PORT", "70000", "port"),
        ("RIPPLE_TAKE_WAIT_S", "61", "take_wait_s"),
        ("RIPPLE_SWEEP_INTERVAL_S", "0", "sweep_interval_s"),
        ("RIPPLE_LOG_LEVEL", "chatty", "log_level"),
        ("RIPPLE_KEY_PREFIX", "a b", "key_prefix"),
        ("RIPPLE_AUTOSCALER__INTERVAL_S", "-1", "autoscaler.interval_s"),
        ("RIPPLE_MAX_BODY_BYTES", "10", "max_body_bytes"),
    ],
)
def test_invalid_env_value_names_setting_and_value(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    msg = str(info.value)
    assert f"invalid setting {setting} ({env})" in msg
    assert repr(value) in msg, msg


def test_invalid_flag_and_yaml_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid setting port \(RIPPLE_PORT\) = 0"):
        load_settings(port=0)
    with pytest.raises(ConfigError, match=r"serve_replicas.*'many'"):
        load_settings(write_yaml(tmp_path, "serve_replicas: many\n"))
    with pytest.raises(ConfigError, match=r"prot.*Extra inputs"):
        load_settings(write_yaml(tmp_path, "prot: 1\n"))


def test_a_redis_url_must_be_one_redis_py_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_REDIS_URL", "http://user:pw@host:6379")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "invalid setting redis_url (RIPPLE_REDIS_URL) = ***: must start with redis://" in str(info.value)
    assert "pw" not in str(info.value)
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380", "unix:///tmp/r.sock"):
        assert load_settings(redis_url=url).redis_url is not None


def test_every_invalid_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_PORT", "x")
    monkeypatch.setenv("RIPPLE_LOG_LEVEL", "y")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "port" in str(info.value) and "log_level" in str(info.value)
    assert {tuple(loc) for loc in info.value.detail} == {("port",), ("log_level",)}


def test_secrets_are_masked(tmp_path: Path) -> None:
    s = load_settings(api_key="rk_secret", worker_key="wk_secret", redis_url="redis://:pw@host:6379/0")
    assert s.api_key is not None and s.api_key.get_secret_value() == "rk_secret"
    shown = json.dumps(s.public()) + repr(s) + str(s)
    for secret in ("rk_secret", "wk_secret", "pw@host"):
        assert secret not in shown
    path = write_yaml(tmp_path, "api-key: typo_secret_value\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "typo_secret_value" not in str(info.value), "a misspelt secret is not echoed either"


def test_queue_config_from_settings() -> None:
    s = load_settings(heartbeat_timeout_s=12, take_wait_s=3, key_prefix="x:")
    q = QueueConfig.from_settings(s, "unix:///tmp/r.sock")
    assert (q.redis_url, q.key_prefix, q.heartbeat_timeout_s, q.take_wait_s) == (
        "unix:///tmp/r.sock",
        "x:",
        12,
        3,
    )
    assert q.runsync_wait_s == s.runsync_wait_s and q.webhook_max_attempts == s.webhook_max_attempts


def test_settings_class_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError):
        Settings(not_a_setting=1)  # type: ignore[call-arg]


# The autoscaler's settings: typed end to end, strict, defaults from the policy --------------------------


def test_unknown_autoscaler_key_in_yaml_stops_start_up(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "autoscaler:\n  intervall_s: 5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    msg = str(info.value)
    assert "unknown setting autoscaler.intervall_s (RIPPLE_AUTOSCALER__INTERVALL_S)" in msg, msg
    assert "interval_s" in msg.split("known:")[1], "the valid names are listed"


def test_unknown_autoscaler_env_variable_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_AUTOSCALER__INTERVALL_S", "5")
    with pytest.raises(
        ConfigError, match=r"unknown setting autoscaler\.intervall_s \(RIPPLE_AUTOSCALER__INTERVALL_S\)"
    ):
        load_settings()


def test_autoscaler_env_variable_with_a_single_underscore_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIPPLE_AUTOSCALER_MAX_GPUS", "4")
    with pytest.raises(
        ConfigError, match=r"unknown setting RIPPLE_AUTOSCALER_MAX_GPUS.*RIPPLE_AUTOSCALER__NAME"
    ):
        load_settings()


def test_autoscaler_settings_the_policy_refuses_stop_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_AUTOSCALER__STARVATION_BOOST_PER_STEP", "40")
    with pytest.raises(ConfigError, match=r"starvation_boost_per_step \(40\) must be within"):
        load_settings()


def test_autoscaler_defaults_are_the_policy_defaults() -> None:
    assert load_settings().autoscaler.policy() == AutoscaleConfig()


def test_autoscaler_settings_build_the_policy_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "autoscaler:\n  starvation_step_s: 10\n  preempt_busy: true\n")
    monkeypatch.setenv("RIPPLE_AUTOSCALER__HIGH_LOAD_THRESHOLD", "3")
    config = load_settings(path).autoscaler.policy()
    assert (config.starvation_step_s, config.preempt_busy, config.high_load_threshold) == (10, True, 3)
    assert config.starvation_reclaim_after_s == 40, "the reclaim follows the step: 3 steps to the max, +1"
    monkeypatch.setenv("RIPPLE_AUTOSCALER__STARVATION_RECLAIM_AFTER_S", "7")
    assert load_settings(path).autoscaler.policy().starvation_reclaim_after_s == 7


def test_boot_config_carries_typed_autoscaler_settings() -> None:
    s = load_settings(drain_timeout_s=42, autoscaler={"interval_s": 0.5, "max_gpus": 3})
    boot = boot_config(s, "unix:///tmp/r.sock", True, AuthConfig(enabled=False))
    assert isinstance(boot.autoscaler, AutoscalerSettings)
    assert (boot.autoscaler.interval_s, boot.autoscaler.max_gpus, boot.drain_timeout_s) == (0.5, 3, 42)
    assert pickle.loads(pickle.dumps(boot)) == boot, "it travels to the actors"


def test_the_readiness_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ready_timeout_s == 900.0
    monkeypatch.setenv("RIPPLE_READY_TIMEOUT_S", "3600")
    boot = boot_config(load_settings(), "unix:///tmp/r.sock", True, AuthConfig(enabled=False))
    assert boot.ready_timeout_s == 3600.0, "on its way to every pool (PoolConfig.ready_timeout_s)"
    monkeypatch.setenv("RIPPLE_READY_TIMEOUT_S", "0")
    with pytest.raises(ConfigError, match="ready_timeout_s"):
        load_settings()


def test_cpu_and_memory_caps_from_the_environment_reach_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """RIPPLE_AUTOSCALER__MAX_CPUS / __MAX_MEMORY_GB become the snapshot's caps (as the autoscaler actor
    passes them), and the policy grants no replica beyond them."""
    monkeypatch.setenv("RIPPLE_AUTOSCALER__MAX_CPUS", "5")
    monkeypatch.setenv("RIPPLE_AUTOSCALER__MAX_MEMORY_GB", "1.5")
    settings = load_settings().autoscaler
    assert (settings.max_cpus, settings.max_memory_gb, settings.max_memory_mb) == (5, 1.5, 1536)

    def granted(cpus: float, memory_mb: int | None) -> tuple[int, str]:
        spec = EndpointSpec.model_validate(
            {
                "name": "cpu",
                "handler": "m:f",
                "gpus": 0,
                "cpus": cpus,
                "memoryMb": memory_mb,
                "maxReplicas": 10,
            }
        )
        snapshot = build_snapshot(
            0.0,
            {"cpu": spec},
            {"cpu": {"queued": 10}},
            {},
            gpus_total=0,
            gpus_available=0,
            max_gpus=settings.max_gpus,
            max_cpus=settings.max_cpus,
            max_memory_mb=settings.max_memory_mb,
            enabled=True,
            config=settings.policy(),
        )
        decisions, _ = decide(snapshot, AutoscalerState())
        ups = sum(d.count for d in decisions if isinstance(d, ScaleUp))
        reasons = " ".join(d.reason for d in decisions if isinstance(d, Blocked))
        return ups, reasons

    ups, reasons = granted(cpus=2, memory_mb=None)
    assert ups == 2 and "CPUs" in reasons, "5 CPUs hold two 2-CPU replicas"
    ups, reasons = granted(cpus=1, memory_mb=512)
    assert ups == 3 and "memory" in reasons, "1536 MB hold three 512 MB replicas"


def test_an_unreachable_store_is_said_before_anything_starts() -> None:
    from orchestrator.core.errors import NotReady
    from orchestrator.ops.instance import check_store_reachable

    with pytest.raises(NotReady) as info:
        check_store_reachable("redis://user:secret@127.0.0.1:1/0", timeout_s=2.0)
    msg = str(info.value)
    assert msg.startswith("cannot reach the store at redis://***@127.0.0.1:1/0: ") and "secret" not in msg
    assert "refused" in msg and msg.endswith("(check RIPPLE_REDIS_URL / --redis-url)")


def test_the_queue_gets_how_many_versions_keep_their_code_and_where_copies_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().keep_versions == 10
    monkeypatch.setenv("RIPPLE_KEEP_VERSIONS", "3")
    boot = boot_config(load_settings(), "unix:///r", True, AuthConfig(enabled=False), None, "/d/pkgs")
    assert (boot.queue.keep_versions, boot.queue.packages_dir) == (3, "/d/pkgs")
    monkeypatch.setenv("RIPPLE_KEEP_VERSIONS", "0")
    with pytest.raises(ConfigError, match="keep_versions"):
        load_settings()


def test_the_queue_gets_how_long_finished_jobs_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().keep_results_s == 1800
    monkeypatch.setenv("RIPPLE_KEEP_RESULTS_S", "0")
    boot = boot_config(load_settings(), "unix:///r", True, AuthConfig(enabled=False), None, None)
    assert boot.queue.keep_results_s == 0, "0: kept for ever"
    for refused in ("-1", "5"):
        monkeypatch.setenv("RIPPLE_KEEP_RESULTS_S", refused)
        with pytest.raises(ConfigError, match="keep_results_s"):
            load_settings()
    monkeypatch.setenv("RIPPLE_KEEP_RESULTS_S", "60")
    assert load_settings().keep_results_s == 60


def test_how_long_store_commands_are_retried_is_a_setting_the_queue_and_its_replicas_get(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().store_retry_s == 30
    monkeypatch.setenv("RIPPLE_STORE_RETRY_S", "5")
    boot = boot_config(load_settings(), "unix:///r", True, AuthConfig(enabled=False), None, None)
    assert boot.queue.store_retry_s == 5
    for refused in ("-1", "3601", "soon"):
        monkeypatch.setenv("RIPPLE_STORE_RETRY_S", refused)
        with pytest.raises(ConfigError, match="store_retry_s"):
            load_settings()


@pytest.mark.parametrize("retry_s", [0.0, 0.1, 5.0, 30.0, 120.0])
def test_a_store_command_is_retried_for_about_the_time_set(retry_s: float) -> None:
    retry = restart_retry(retry_s)
    waits_s = [ExponentialBackoff(cap=2.0, base=0.05).compute(n) for n in range(1, retry.get_retries() + 1)]
    assert retry_s <= sum(waits_s) < retry_s + 2.0, waits_s


def test_every_store_client_retries_for_the_time_set() -> None:
    """The job store's, the autoscaler's and the in-cluster client's Redis clients (none connects here)."""
    url, retry_s = "unix:///nowhere/redis.sock", 5.0
    clients = [
        RedisStore.connect(url, "p:", retry_s).r,
        RedisAutoscalerStore.connect(url, "p:", retry_s)._r,
        SyncFinals(url, "p:", retry_s).r,
    ]
    for client in clients:
        conn = client.connection_pool.make_connection()
        assert conn.retry.get_retries() == restart_retry(retry_s).get_retries(), client
        assert set(RETRIED_ERRORS) <= set(conn.retry._supported_errors), client
