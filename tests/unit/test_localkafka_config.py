"""What the local broker is told, rendered without a broker: its properties for a plain and a
secured node, and the settings a caller may not override or cannot express."""

from __future__ import annotations

from pathlib import Path

import pytest

from localkafka import LocalKafka
from localkafka.config import (
    Listeners,
    admin_client_properties,
    check_extra_config,
    render_properties,
    server_properties,
)
from localkafka.errors import LocalKafkaError
from localkafka.secured import check_scram_users

DATA = Path("/var/kafka/data")
KEYSTORE = Path("/var/kafka/tls/server-keystore.pem")


def test_a_plain_node_listens_on_plaintext_and_its_controller_only() -> None:
    props = server_properties(Listeners(9092, 9093), data_dir=DATA)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(DATA)
    assert props["auto.create.topics.enable"] == "false"
    assert not [key for key in props if key.startswith("listener.name.")]
    assert "authorizer.class.name" not in props


def test_a_secured_node_adds_a_sasl_ssl_listener_with_acls() -> None:
    props = server_properties(Listeners(9092, 9093, 9094), data_dir=DATA, keystore=KEYSTORE)
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_SSL://127.0.0.1:9094"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094"
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(KEYSTORE)
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert props["allow.everyone.if.no.acl.found"] == "false"


def test_a_sasl_ssl_listener_needs_a_keystore() -> None:
    with pytest.raises(LocalKafkaError, match="keystore"):
        server_properties(Listeners(9092, 9093, 9094), data_dir=DATA)


def test_extra_config_is_applied_last() -> None:
    props = server_properties(
        Listeners(9092, 9093), data_dir=DATA, extra={"num.partitions": "3", "x.y": "z"}
    )
    assert (props["num.partitions"], props["x.y"]) == ("3", "z")


def test_rendering_escapes_what_java_properties_would_read_otherwise() -> None:
    text = render_properties({"a": "plain", "b": r"C:\dir", "c": " leading blank"})
    assert text == "a=plain\nb=C:\\\\dir\nc=\\ leading blank\n"


def test_the_admin_client_properties_connect_over_sasl_ssl_as_admin() -> None:
    props = admin_client_properties("s3cret-pw", Path("/tls/ca.pem"))
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert 'username="admin" password="s3cret-pw";' in props["sasl.jaas.config"]
    assert props["ssl.truststore.location"] == "/tls/ca.pem"


@pytest.mark.parametrize("key", ["listeners", "node.id", "log.dirs", "controller.quorum.voters"])
def test_reserved_keys_are_refused(key: str) -> None:
    with pytest.raises(LocalKafkaError, match=f"may not set {key}"):
        check_extra_config({key: "x"}, secured=False)
    with pytest.raises(LocalKafkaError, match="may not set"):
        LocalKafka(extra_config={key: "x"})


@pytest.mark.parametrize("key", ["super.users", "listener.name.sasl_ssl.ssl.client.auth"])
def test_a_secured_node_also_owns_its_listener_and_authorizer_settings(key: str) -> None:
    assert check_extra_config({key: "x"}, secured=False) == {key: "x"}
    with pytest.raises(LocalKafkaError, match=f"may not set {key}"):
        check_extra_config({key: "x"}, secured=True)


@pytest.mark.parametrize("key", ["", "a b", "a=b", "a:b", "#a", "a\\b", "a\nb"])
def test_bad_property_names_are_refused(key: str) -> None:
    with pytest.raises(LocalKafkaError, match="not a usable broker property name"):
        check_extra_config({key: "x"}, secured=False)


def test_a_line_break_in_a_value_is_refused() -> None:
    with pytest.raises(LocalKafkaError, match="line break"):
        check_extra_config({"a": "x\ny=z"}, secured=False)


def test_scram_users_are_checked_without_quoting_their_password() -> None:
    assert check_scram_users({"alice": "password-1"}) == {"alice": "password-1"}
    with pytest.raises(LocalKafkaError, match="not 'admin'"):
        check_scram_users({"admin": "password-1"})
    with pytest.raises(LocalKafkaError, match="SCRAM user name"):
        check_scram_users({"al ice": "password-1"})
    with pytest.raises(LocalKafkaError, match="password of SCRAM user 'bob'") as refused:
        check_scram_users({"bob": "short"})
    assert "short" not in str(refused.value)


def test_a_startup_timeout_must_be_positive() -> None:
    with pytest.raises(LocalKafkaError, match="startup_timeout"):
        LocalKafka(startup_timeout=0)
