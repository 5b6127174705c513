"""Loading scenarios: defaults, overrides, error messages that name the key, freezing and round-trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from raydiff.config import Config, StrategyConfig
from raydiff.config_load import dump_yaml, load_config
from raydiff.errors import ConfigError
from raydiff.runner import check_config


def write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------------------------
# defaults and values
# --------------------------------------------------------------------------------------------


def test_defaults_from_none_and_empty_dict():
    cfg = load_config()
    assert cfg == Config()
    assert load_config({}) == cfg
    assert cfg.strategy.name == "fedbuff"
    assert cfg.strategy.buffer_size == 4
    assert cfg.data.beta == 0.5
    assert cfg.train.local_steps == 10 and cfg.train.local_epochs is None
    assert cfg.run.max_updates == 200 and cfg.run.max_vtime is None


def test_yaml_file_sets_fields_and_keeps_other_defaults(tmp_path):
    p = write(
        tmp_path,
        "seed: 7\nstrategy:\n  name: fedasync\n  alpha: 0.3\nclients:\n  speed: {mean: 250}\n",
        name="my-scenario.yaml",
    )
    cfg = load_config(p)
    assert cfg.name == "my-scenario"  # file stem when the file names no run
    assert cfg.seed == 7
    assert cfg.strategy.name == "fedasync" and cfg.strategy.alpha == 0.3
    assert cfg.strategy.buffer_size == 4  # untouched default
    assert cfg.clients.speed.mean == 250.0 and isinstance(cfg.clients.speed.mean, float)
    assert cfg.clients.speed.dist == "constant"
    assert load_config(str(p)) == cfg


def test_name_in_file_wins_over_stem(tmp_path):
    assert load_config(write(tmp_path, "name: named\n")).name == "named"


def test_empty_yaml_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "# nothing but a comment\n", name="empty.yaml"))
    assert cfg == dataclasses.replace(Config(), name="empty")


def test_from_dict_nested():
    cfg = load_config({"data": {"partition": "iid", "beta": 2}, "train": {"local_steps": None, "local_epochs": 1.5}})
    assert cfg.data.partition == "iid"
    assert cfg.data.beta == 2.0
    assert cfg.train.local_steps is None and cfg.train.local_epochs == 1.5


def test_integral_float_accepted_for_int_field():
    assert load_config({"train": {"batch_size": 16.0}}).train.batch_size == 16


# --------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------


def test_overrides_on_defaults():
    cfg = load_config(
        None, ["strategy.name=fedasync", "clients.speed.mean=5", "run.max_vtime=null", "run.max_updates=3"]
    )
    assert cfg.strategy.name == "fedasync"
    assert cfg.clients.speed.mean == 5.0
    assert cfg.run.max_vtime is None
    assert cfg.run.max_updates == 3


def test_overrides_on_file_win_over_file(tmp_path):
    p = write(tmp_path, "strategy:\n  name: fedavg\nrun:\n  max_updates: 50\n")
    cfg = load_config(p, ["strategy.name=fedbuff", "run.max_updates=null", "run.max_vtime=12.5"])
    assert cfg.strategy.name == "fedbuff"
    assert cfg.run.max_updates is None and cfg.run.max_vtime == 12.5


def test_overrides_on_config_object():
    base = load_config({"seed": 3})
    assert load_config(base) is base
    cfg = load_config(base, ["strategy.staleness.fn=hinge"])
    assert cfg.seed == 3 and cfg.strategy.staleness.fn == "hinge"


def test_override_does_not_mutate_source_mapping():
    src = {"strategy": {"name": "fedavg"}}
    load_config(src, ["strategy.name=fedasync"])
    assert src == {"strategy": {"name": "fedavg"}}


def test_override_value_is_parsed_as_yaml():
    cfg = load_config(None, ["eval.judge=false", "strategy.server_lr=0.5", "name=abc"])
    assert cfg.eval.judge is False and cfg.strategy.server_lr == 0.5 and cfg.name == "abc"


def test_both_stop_conditions_null_is_an_error():
    with pytest.raises(ConfigError, match=r"run\.max_updates"):
        load_config(None, ["run.max_updates=null"])


# --------------------------------------------------------------------------------------------
# errors name the key
# --------------------------------------------------------------------------------------------


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"^bogus: unknown key") as e:
        load_config({"bogus": 1})
    assert "strategy" in str(e.value)  # lists what is allowed


def test_unknown_nested_key():
    with pytest.raises(ConfigError, match=r"^strategy\.bufer_size: unknown key") as e:
        load_config({"strategy": {"bufer_size": 3}})
    assert "buffer_size" in str(e.value)


def test_unknown_nested_key_via_override():
    with pytest.raises(ConfigError, match=r"clients\.speed\.meen"):
        load_config(None, ["clients.speed.meen=3"])


def test_unknown_strategy_name_lists_allowed():
    with pytest.raises(ConfigError, match=r"strategy\.name") as e:
        load_config(None, ["strategy.name=fedsgd"])
    msg = str(e.value)
    assert "fedsgd" in msg
    for allowed in ("fedavg", "fedasync", "fedbuff"):
        assert allowed in msg


@pytest.mark.parametrize("beta", [0, -0.5])
def test_beta_must_be_positive(beta):
    with pytest.raises(ConfigError, match=r"data\.beta"):
        load_config({"data": {"beta": beta}})


@pytest.mark.parametrize("value", ["thirty-two", 3.5, True])
def test_wrong_type_for_int(value):
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected an integer"):
        load_config({"train": {"batch_size": value}})


def test_wrong_type_for_float():
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number"):
        load_config({"train": {"lr": "fast"}})


def test_null_for_non_optional_field():
    with pytest.raises(ConfigError, match=r"^train\.batch_size: expected an integer, got None"):
        load_config({"train": {"batch_size": None}})


def test_section_given_a_scalar():
    with pytest.raises(ConfigError, match=r"^strategy: expected a mapping"):
        load_config({"strategy": "fedavg"})


def test_out_of_range_nested_value():
    with pytest.raises(ConfigError, match=r"clients\.speed\.mean"):
        load_config(None, ["clients.speed.mean=0"])


def test_malformed_yaml_names_the_file(tmp_path):
    p = write(tmp_path, "strategy:\n  name: [fedavg\n", name="broken.yaml")
    with pytest.raises(ConfigError, match="broken.yaml") as e:
        load_config(p)
    assert "not valid YAML" in str(e.value)


def test_yaml_holding_a_list(tmp_path):
    p = write(tmp_path, "- a\n- b\n", name="list.yaml")
    with pytest.raises(ConfigError, match="list.yaml") as e:
        load_config(p)
    assert "mapping" in str(e.value) and "list" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml") as e:
        load_config(tmp_path / "nope.yaml")
    assert "does not exist" in str(e.value)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("strategy.name", "KEY=VALUE"),
        ("=3", "empty"),
        ("strategy..name=fedavg", "empty"),
    ],
)
def test_bad_override_syntax(bad, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        load_config(None, [bad])
    assert bad in str(e.value)


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match=r"seed"):
        load_config({"seed": 1}, ["seed.x=1"])


# --------------------------------------------------------------------------------------------
# frozen and round-trip
# --------------------------------------------------------------------------------------------


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.strategy.name = "fedavg"  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "name=rt",
            "seed=11",
            "strategy.name=fedasync",
            "strategy.staleness.fn=hinge",
            "strategy.staleness.b=2",
            "clients.speed.dist=lognormal",
            "clients.speed.sigma=0.25",
            "train.local_steps=null",
            "train.local_epochs=0.5",
            "train.lr=0.00001",
            "run.max_vtime=30",
            "run.address=auto",
            "data.partition=iid",
        ],
    ],
)
def test_dump_yaml_round_trips(tmp_path, overrides):
    cfg = load_config(None, overrides)
    text = dump_yaml(cfg)
    assert isinstance(yaml.safe_load(text), dict)
    assert load_config(yaml.safe_load(text)) == cfg
    assert load_config(write(tmp_path, text)) == cfg


# --------------------------------------------------------------------------------------------
# cross-field checks (runner.check_config)
# --------------------------------------------------------------------------------------------


def test_check_config_rejects_concurrency_above_clients():
    cfg = load_config(None, ["clients.num_clients=4", "strategy.concurrency=5"])
    with pytest.raises(ConfigError, match=r"strategy\.concurrency=5.*clients\.num_clients=4"):
        check_config(cfg)


def test_check_config_accepts_concurrency_equal_to_clients():
    check_config(load_config(None, ["clients.num_clients=4", "strategy.concurrency=4"]))


def test_check_config_rejects_round_larger_than_population_for_fedavg():
    cfg = load_config(None, ["strategy.name=fedavg", "clients.num_clients=3", "strategy.clients_per_round=4"])
    with pytest.raises(ConfigError, match=r"strategy\.clients_per_round"):
        check_config(cfg)


def test_check_config_ignores_concurrency_for_fedavg():
    check_config(
        load_config(
            None,
            ["strategy.name=fedavg", "clients.num_clients=3", "strategy.clients_per_round=3", "strategy.concurrency=8"],
        )
    )


def test_strategy_config_direct_validation():
    with pytest.raises(ConfigError, match=r"strategy\.alpha"):
        StrategyConfig(alpha=0.0)


def test_exponent_without_dot_is_a_number():
    """YAML 1.1 reads ``1e-3`` as a string; a float field must still accept it."""
    from raydiff.config_load import load_config

    assert load_config({"train": {"lr": "1e-3"}}).train.lr == 1e-3
    assert load_config(None, ["train.lr=5e-4"]).train.lr == 5e-4
