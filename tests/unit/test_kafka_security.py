"""Kafka security settings: validated at start, turned into aiokafka and Faust options in one
place, and the password never printed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism

from streams.credentials import faust_credentials
from streams.errors import ConfigError
from streams.settings import Settings
from topics.config import Secret
from topics.connection import KafkaConnection

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-Pa55word-that-must-not-leak"


def _sasl_env(**extra: str) -> dict[str, str]:
    return {
        "CCC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CCC_KAFKA_SASL_USERNAME": "ccc-worker",
        "CCC_KAFKA_SASL_PASSWORD": PASSWORD,
        **extra,
    }


def test_plaintext_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    connection = KafkaConnection.from_config(settings.connection_config())
    assert connection.aiokafka_auth() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(connection) is None


def test_protocol_and_mechanism_are_normalised_and_checked() -> None:
    settings = Settings.from_env(
        _sasl_env(CCC_KAFKA_SECURITY_PROTOCOL="sasl_ssl", CCC_KAFKA_SASL_MECHANISM="scram-sha-256")
    )
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"
    with pytest.raises(ConfigError, match="CCC_KAFKA_SECURITY_PROTOCOL='TLS'"):
        Settings.from_env({"CCC_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="CCC_KAFKA_SASL_MECHANISM='GSSAPI'"):
        Settings.from_env(_sasl_env(CCC_KAFKA_SASL_MECHANISM="GSSAPI"))


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"CCC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "CCC_KAFKA_SASL_USERNAME and "),
        (
            {"CCC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CCC_KAFKA_SASL_USERNAME": "u"},
            "needs CCC_KAFKA_SASL_PASSWORD_FILE (or CCC_KAFKA_SASL_PASSWORD)",
        ),
        (
            {"CCC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CCC_KAFKA_SASL_PASSWORD": PASSWORD},
            "needs CCC_KAFKA_SASL_USERNAME",
        ),
    ],
)
def test_sasl_without_credentials_names_what_is_missing(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=missing.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_exactly_one_password_source(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    with pytest.raises(ConfigError, match="only one of") as error:
        Settings.from_env(_sasl_env(CCC_KAFKA_SASL_PASSWORD_FILE=str(password_file)))
    assert PASSWORD not in str(error.value)


def test_password_file_is_read_without_its_line_break(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    env = _sasl_env(CCC_KAFKA_SASL_PASSWORD_FILE=str(password_file))
    del env["CCC_KAFKA_SASL_PASSWORD"]
    connection = KafkaConnection.from_config(Settings.from_env(env).connection_config())
    assert connection.aiokafka_auth()["sasl_plain_password"] == PASSWORD


@pytest.mark.parametrize(
    "variable",
    [
        "CCC_KAFKA_SASL_PASSWORD_FILE",
        "CCC_KAFKA_SSL_CAFILE",
        "CCC_KAFKA_SSL_CERTFILE",
        "CCC_KAFKA_SSL_KEYFILE",
    ],
)
def test_files_must_exist(variable: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{variable}=.*no such file"):
        Settings.from_env(_sasl_env(**{variable: str(tmp_path / "missing.pem")}))


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("\n")
    env = _sasl_env(CCC_KAFKA_SASL_PASSWORD_FILE=str(password_file))
    del env["CCC_KAFKA_SASL_PASSWORD"]
    with pytest.raises(ConfigError, match=r"CCC_KAFKA_SASL_PASSWORD_FILE=.* is empty"):
        KafkaConnection.from_config(Settings.from_env(env).connection_config())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CCC_KAFKA_SASL_USERNAME": "u"}, "does not use SASL"),
        ({"CCC_KAFKA_SASL_PASSWORD": PASSWORD}, "does not use SASL"),
        (
            {"CCC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CCC_KAFKA_SSL_CAFILE": __file__},
            "does not use TLS",
        ),
        (
            {"CCC_KAFKA_SECURITY_PROTOCOL": "SSL", "CCC_KAFKA_SSL_KEYFILE": __file__},
            "CCC_KAFKA_SSL_KEYFILE is set without CCC_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_settings_that_would_be_ignored_are_refused(env: dict[str, str], message: str) -> None:
    if "CCC_KAFKA_SECURITY_PROTOCOL" in env and env["CCC_KAFKA_SECURITY_PROTOCOL"].startswith(
        "SASL"
    ):
        env = {**_sasl_env(), **env}
    with pytest.raises(ConfigError, match=message) as error:
        Settings.from_env(env)
    assert PASSWORD not in str(error.value)


def test_plain_is_refused_without_tls() -> None:
    env = _sasl_env(CCC_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", CCC_KAFKA_SASL_MECHANISM="PLAIN")
    with pytest.raises(ConfigError, match="PLAIN sends the password in clear text"):
        Settings.from_env(env)


def test_the_password_is_never_printed() -> None:
    settings = Settings.from_env(_sasl_env())
    connection = KafkaConnection.from_config(settings.connection_config())
    printed = [
        repr(settings),
        str(settings),
        f"{settings.kafka_sasl_password}",
        f"{settings.kafka_sasl_password!r:>40}",
        repr(connection),
        connection.describe(),
        repr(faust_credentials(connection)),
        *(value for _, value, _ in settings.describe()),
    ]
    assert all(PASSWORD not in text for text in printed), printed
    assert ("CCC_KAFKA_SASL_PASSWORD", "***") in [(e, v) for e, v, _ in settings.describe()]
    assert settings.kafka_sasl_password.reveal() == PASSWORD
    assert str(Secret("")) == ""  # an unset password does not look set


def test_python_m_streams_settings_masks_the_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCC_")}
    done = subprocess.run(
        [sys.executable, "-m", "streams.settings"],
        cwd=REPO,
        env={**env, **_sasl_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "CCC_KAFKA_SASL_PASSWORD=***" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("SASL_SSL", AuthProtocol.SASL_SSL), ("SASL_PLAINTEXT", AuthProtocol.SASL_PLAINTEXT)],
)
def test_faust_gets_the_same_sasl_options_as_aiokafka(
    protocol: str, expected: AuthProtocol
) -> None:
    connection = KafkaConnection.from_config(
        Settings.from_env(_sasl_env(CCC_KAFKA_SECURITY_PROTOCOL=protocol)).connection_config()
    )
    credentials = faust_credentials(connection)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is expected
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    # Faust's aiokafka driver turns the credentials back into aiokafka's arguments: they must
    # be exactly what ccc-guard's own clients use (SCRAM, not Faust's default PLAIN).
    assert dict(credentials_to_aiokafka_auth(credentials)) == {
        "ssl_context": None,
        **connection.aiokafka_auth(),
    }


def test_faust_gets_ssl_credentials_for_tls_only() -> None:
    connection = KafkaConnection.from_config(
        Settings.from_env({"CCC_KAFKA_SECURITY_PROTOCOL": "SSL"}).connection_config()
    )
    credentials = faust_credentials(connection)
    assert isinstance(credentials, SSLCredentials)
    assert dict(credentials_to_aiokafka_auth(credentials)) == connection.aiokafka_auth()
    assert connection.ssl_context is not None and connection.ssl_context.check_hostname


def test_the_app_is_built_with_the_credentials() -> None:
    from streams.app import create_app

    settings = Settings.from_env({**_sasl_env(), "CCC_STORE": "memory://"})
    app, _ = create_app(settings)
    assert isinstance(app.conf.broker_credentials, SASLCredentials)
    assert app.conf.broker_credentials.protocol is AuthProtocol.SASL_SSL
    # Faust's banner prints the broker URLs: they carry no credentials.
    assert all(PASSWORD not in str(url) for url in app.conf.broker)


def test_an_unusable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    settings = Settings.from_env(_sasl_env(CCC_KAFKA_SSL_CAFILE=str(bad)))
    with pytest.raises(ConfigError, match=r"CCC_KAFKA_SSL_CAFILE=.* cannot be loaded"):
        KafkaConnection.from_config(settings.connection_config())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_a_ca_file_and_a_client_certificate_load(tmp_path: Path) -> None:
    from localkafka.tls import ensure_server_tls

    files = ensure_server_tls(tmp_path)
    # The server keystore holds a key and its chain: good enough as a client certificate.
    settings = Settings.from_env(
        _sasl_env(
            CCC_KAFKA_SSL_CAFILE=str(files.ca_file),
            CCC_KAFKA_SSL_CERTFILE=str(files.keystore_file),
        )
    )
    connection = KafkaConnection.from_config(settings.connection_config())
    assert connection.ssl_context is not None
    expected = f"SASL_SSL, SCRAM-SHA-512 as user 'ccc-worker', CA {files.ca_file}"
    assert connection.describe() == expected
    wrong_key = tmp_path / "other.key"
    wrong_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"CCC_KAFKA_SSL_CERTFILE=.* cannot be loaded"):
        KafkaConnection.from_config(
            Settings.from_env(
                _sasl_env(
                    CCC_KAFKA_SSL_CERTFILE=str(files.keystore_file),
                    CCC_KAFKA_SSL_KEYFILE=str(wrong_key),
                )
            ).connection_config()
        )


def test_aiokafkas_debug_log_of_the_sasl_exchange_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiokafka.protocol.admin import SaslAuthenticateRequest_v1, SaslHandShakeRequest_v1

    import topics.connection  # noqa: F401  (installs the filter)

    caplog.set_level(logging.DEBUG, logger="aiokafka.conn")
    plain = SaslAuthenticateRequest_v1(b"\x00ccc-worker\x00" + PASSWORD.encode())
    handshake = SaslHandShakeRequest_v1("PLAIN")
    logger = logging.getLogger("aiokafka.conn")
    # The very calls aiokafka's AIOKafkaConnection.send makes.
    logger.debug("Request to %s:%d %d: %s", "127.0.0.1", 9093, 3, plain)
    logger.debug("Request to %s:%d %d: %s", "127.0.0.1", 9093, 2, handshake)
    assert PASSWORD not in caplog.text
    assert "SaslAuthenticateRequest_v1(<redacted>)" in caplog.text
    assert "mechanism='PLAIN'" in caplog.text  # other requests are logged as before
