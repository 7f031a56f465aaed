"""Faust's ``broker_credentials`` from the Kafka layer's resolved connection: the one piece of
connection code that knows Faust, so ``topics/`` does not have to."""

from __future__ import annotations

import faust
from faust.types.auth import SASLMechanism

from topics.connection import KafkaConnection


def faust_credentials(connection: KafkaConnection) -> faust.auth.Credentials | None:
    """Faust's aiokafka driver turns these back into the same aiokafka arguments
    (``credentials_to_aiokafka_auth``); its SASLCredentials only means SASL_SSL when it
    carries an SSL context."""
    if connection.security_protocol == "PLAINTEXT":
        return None
    if connection.security_protocol == "SSL":
        return faust.SSLCredentials(connection.ssl_context)
    return faust.SASLCredentials(
        username=connection.sasl_username,
        password=connection.sasl_password.reveal() if connection.sasl_password else "",
        ssl_context=connection.ssl_context,  # None: SASL_PLAINTEXT
        mechanism=SASLMechanism(connection.sasl_mechanism),
    )
