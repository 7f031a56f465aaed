"""Settings: defaults that work locally, clear errors for anything unknown or malformed."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from topics.catalogue import build_catalogue

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_work_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.partitions == 8 and settings.store == "rocksdb://"


def test_values_are_parsed_and_normalised() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": " a:9092, b:9093 ",
            "CCC_PARTITIONS": "12",
            "CCC_WEB_ENABLED": "no",
            "CCC_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.bootstrap_servers == "a:9092,b:9093"
    assert settings.partitions == 12 and settings.web_enabled is False
    assert settings.log_level == "debug"


def test_unknown_variable_is_refused_and_named() -> None:
    with pytest.raises(ConfigError, match=r"CCC_PARTITION\b"):
        Settings.from_env({"CCC_PARTITION": "4"})


def test_variables_read_elsewhere_are_accepted_but_not_settings() -> None:
    # localkafka reads CCC_KAFKA_CACHE itself; the worker must not refuse an env that sets it.
    settings = Settings.from_env({"CCC_KAFKA_CACHE": "/tmp/jars"})
    assert "CCC_KAFKA_CACHE" not in {env for env, _, _ in settings.describe()}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CCC_PARTITIONS", "0"),
        ("CCC_PARTITIONS", "eight"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("CCC_STORE", "redis://"),
        ("CCC_WEB_ENABLED", "maybe"),
        ("CCC_VERDICTS_TOPIC", "bad topic"),
        ("CCC_EXPIRY_SWEEP_INTERVAL_SECONDS", "-1"),
        ("CCC_WEB_PORT", "70000"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost:99999"),
        ("CCC_WEB_HOST", "http://0.0.0.0"),
        ("CCC_WEB_HOST", "host name"),
        ("CCC_WEB_HOST", "10.0.0.1:6066"),
        ("CCC_WEB_HOST", "::1"),
        ("CCC_WEB_HOST", "[::1]"),
        ("CCC_DATA_DIR", " "),
    ],
)
def test_malformed_value_is_refused_with_the_variable_and_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable) as error:
        Settings.from_env({variable: value})
    assert repr(value) in str(error.value)


def test_topic_prefix_and_app_id_name_every_topic() -> None:
    catalogue = build_catalogue(
        Settings.from_env({"CCC_TOPIC_PREFIX": "stage.", "CCC_APP_ID": "guard-a"}).topic_naming()
    )
    names = [spec.name for spec in catalogue.all()]
    assert names == [
        "stage.ccc.listing.events",
        "stage.ccc.certificate.status",
        "stage.ccc.listing.verdicts",
        "stage.ccc.deadletter",
        "stage.ccc.shop.alerts",
        "guard-a-certificate-commands",
        "guard-a-listing-updates",
        "guard-a-certificate-changes",
        "guard-a-shop-verdicts",
        "guard-a-listings-changelog",
        "guard-a-listing-claims-changelog",
        "guard-a-certificate-watches-changelog",
        "guard-a-certificates-changelog",
        "guard-a-certificate-subscriptions-changelog",
        "guard-a-shop-risk-changelog",
        "guard-a-shop-summaries-changelog",
    ]
    assert {spec.partitions for spec in catalogue.all()} == {8}
    assert catalogue.certificate_status.config_dict == {"cleanup.policy": "compact"}
    assert {spec.config_dict["cleanup.policy"] for _, spec in catalogue.changelogs} == {"compact"}


def test_catalogue_names_the_changelogs_faust_uses() -> None:
    from streams.app import create_app

    settings = Settings.from_env({"CCC_APP_ID": "guard-b", "CCC_STORE": "memory://"})
    app, topology = create_app(settings)
    tables = {
        "listings": topology.listings,
        "listing-claims": topology.claims,
        "certificate-watches": topology.watches,
        "certificates": topology.certificates,
        "certificate-subscriptions": topology.subscriptions,
        "shop-risk": topology.shop_risk,
        "shop-summaries": topology.shop_summaries,
    }
    assert {name: spec.name for name, spec in app.catalogue.changelogs} == {
        name: table.changelog_topic.get_topic_name() for name, table in tables.items()
    }


def test_readme_documents_every_setting() -> None:
    readme = README.read_text()
    missing = [
        f.metadata["env"] for f in fields(Settings) if f"`{f.metadata['env']}`" not in readme
    ]
    assert missing == []


def test_a_data_dir_with_braces_is_taken_literally_by_faust(tmp_path: Path) -> None:
    """Faust formats its data directory with ``str.format``: ``{x}`` was a KeyError at start."""
    from streams.app import create_app

    data_dir = tmp_path / "{x}" / "data{0}"
    app, _ = create_app(Settings.from_env({"CCC_DATA_DIR": str(data_dir)}))
    assert app.conf.datadir == data_dir


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "data"
    taken.write_text("")
    with pytest.raises(ConfigError, match=r"CCC_DATA_DIR=.*not a directory"):
        Settings.from_env({"CCC_DATA_DIR": str(taken)})
    with pytest.raises(ConfigError, match=r"CCC_DATA_DIR=.*cannot be created"):
        Settings.from_env({"CCC_DATA_DIR": str(taken / "below")})


@pytest.mark.parametrize("instance_id", ["ccc-guard-0", "worker.7_b"])
def test_a_group_instance_id_makes_the_consumer_a_static_member(instance_id: str) -> None:
    from streams.app import create_app

    app, _ = create_app(
        Settings.from_env({"CCC_GROUP_INSTANCE_ID": instance_id, "CCC_STORE": "memory://"})
    )
    assert app.conf.consumer_group_instance_id == instance_id
    dynamic, _ = create_app(Settings.from_env({"CCC_STORE": "memory://"}))
    assert dynamic.conf.consumer_group_instance_id is None


def test_a_malformed_group_instance_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="CCC_GROUP_INSTANCE_ID='pod 0'"):
        Settings.from_env({"CCC_GROUP_INSTANCE_ID": "pod 0"})


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost", "ccc-guard-0.ccc-guard.svc"])
def test_web_hosts_faust_can_put_in_a_url_are_accepted(host: str) -> None:
    assert Settings.from_env({"CCC_WEB_HOST": host}).web_host == host


def test_the_advertised_web_host_defaults_to_the_bind_host_and_is_never_0_0_0_0() -> None:
    assert Settings.from_env({"CCC_WEB_HOST": "10.1.2.3"}).advertised_web_host == "10.1.2.3"
    chosen = Settings.from_env({"CCC_WEB_HOST": "0.0.0.0", "CCC_WEB_ADVERTISED_HOST": "10.1.2.3"})
    assert (chosen.web_host, chosen.advertised_web_host) == ("0.0.0.0", "10.1.2.3")
    with pytest.raises(ConfigError, match=re.escape("CCC_WEB_ADVERTISED_HOST='0.0.0.0'")):
        Settings.from_env({"CCC_WEB_ADVERTISED_HOST": "0.0.0.0"})


def test_the_query_token_is_read_from_its_file_and_must_not_be_guessable(tmp_path: Path) -> None:
    assert Settings.from_env({}).query_token() is None
    token_file = tmp_path / "token"
    token_file.write_text("a-long-enough-query-token\n")
    settings = Settings.from_env({"CCC_QUERY_TOKEN_FILE": str(token_file)})
    assert settings.query_token() == b"a-long-enough-query-token"
    token_file.write_text("short\n")
    with pytest.raises(ConfigError, match="fewer than 16"):
        settings.query_token()
    with pytest.raises(ConfigError, match="CCC_QUERY_TOKEN_FILE='/no/such/token' is invalid"):
        Settings.from_env({"CCC_QUERY_TOKEN_FILE": "/no/such/token"})


def test_a_query_api_other_workers_cannot_reach_is_refused_at_start(tmp_path: Path) -> None:
    from streams.app import create_app

    token_file = tmp_path / "token"
    token_file.write_text("a-long-enough-query-token\n")
    env = {"CCC_QUERY_TOKEN_FILE": str(token_file), "CCC_STORE": "memory://"}
    with pytest.raises(ConfigError, match="CCC_WEB_ADVERTISED_HOST"):
        create_app(Settings.from_env({**env, "CCC_WEB_HOST": "0.0.0.0"}))
    with pytest.raises(ConfigError, match="CCC_WEB_ENABLED=false"):
        create_app(Settings.from_env({**env, "CCC_WEB_ENABLED": "false"}))
    app, _ = create_app(Settings.from_env({**env, "CCC_WEB_ADVERTISED_HOST": "10.1.2.3"}))
    assert app.conf.canonical_url.host == "10.1.2.3"
