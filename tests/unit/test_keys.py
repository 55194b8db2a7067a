"""Key names: explicit attributes of one class, and the Lua prelude rendered from that class."""

from __future__ import annotations

import re

import pytest

from orchestrator.store import scripts
from orchestrator.store.keys import Keys, key_names, lua_prelude

pytestmark = pytest.mark.timeout(30)


def test_every_key_is_an_explicit_attribute() -> None:
    assert "__getattr__" not in vars(Keys), "a misspelt key name must fail (and fail type-checking)"
    k = Keys("p:")
    with pytest.raises(AttributeError):
        k.autoscaler_leder  # type: ignore[attr-defined]  # noqa: B018
    assert (k.leases, k.webhooks_inflight, k.autoscaler_leader) == (
        "p:leases",
        "p:webhooks:inflight",
        "p:autoscaler:leader",
    )
    assert (k.job("j1"), k.queue("ep"), k.autoscaler_history("ep")) == (
        "p:job:j1",
        "p:q:ep",
        "p:autoscaler:history:ep",
    )


def test_prelude_renders_every_key_of_the_class() -> None:
    singletons, templates = key_names()
    assert {"leases", "autoscaler_leader", "autoscaler_enabled"} <= set(singletons)
    assert {"job", "queue", "autoscaler_history"} <= set(templates)
    prelude = lua_prelude()
    k = Keys("p:")
    for name, key in singletons.items():
        assert f"local K_{name} = P .. '{key}'" in prelude
        assert getattr(k, name) == "p:" + key
    for name, (head, tail) in templates.items():
        assert f"local function K_{name}(x) return P .. '{head}' .. x .. '{tail}' end" in prelude
        assert getattr(k, name)("X") == f"p:{head}X{tail}"


def test_scripts_use_only_keys_the_prelude_defines() -> None:
    defined = set(re.findall(r"local (?:function )?(K_\w+)", lua_prelude()))
    for name in (
        "SUBMIT",
        "TAKE",
        "CLAIM",
        "FINISH",
        "FINISH_CLAIM",
        "MOVE",
        "SWEEP",
        "PURGE",
        "AUTOSCALER_LEASE",
    ):
        used = set(re.findall(r"\bK_\w+", getattr(scripts, name)))
        assert used <= defined, (name, used - defined)


def test_shared_rules_are_rendered_into_the_scripts() -> None:
    assert "@" not in scripts.SUBMIT + scripts.MOVE, "no placeholder left"
    assert "1125899906842624" in scripts.SUBMIT, "the low-priority stride comes from core.jobs"
    assert "<= (tonumber(cur[5]" in scripts.MOVE, "the lost-lease budget comes from core.jobs"
