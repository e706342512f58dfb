"""How every Kafka client of the pipeline reaches the cluster: the sensor's consumer and admin
client, the dead-letter producer, the ``/ready`` check and the CLI all build their librdkafka
configuration here, so authentication set once reaches all of them.

Managed Kafka (Confluent Cloud, MSK, Aiven, Event Hubs...) needs TLS and SASL: the
``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_CA_LOCATION`` settings map to
librdkafka's ``security.protocol``, ``sasl.*`` and ``ssl.ca.location``. The password is a
``SecretStr``: it is handed to librdkafka and nowhere else (not ``repr``, not errors).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from ig_refresh_dagster import redaction, settings

# KafkaConnection field -> the setting it comes from; the Dagster ``kafka`` resource has the
# same fields, filled from the same settings (``definitions.py``).
CONNECTION_SETTINGS = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_ca_location": "KAFKA_SSL_CA_LOCATION",
}
_LIBRDKAFKA_KEYS = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "ssl_ca_location": "ssl.ca.location",
}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class KafkaConnection(BaseModel):
    # Validation errors would otherwise echo the input, password included.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    bootstrap_servers: str
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None

    @field_validator("security_protocol")
    @classmethod
    def _known_protocol(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {value[:40]!r}"
            )
        return value.upper()

    @field_validator("sasl_password")
    @classmethod
    def _clean_password(cls, value: SecretStr | None) -> SecretStr | None:
        """Stripped and checked like every secret, and hidden from every message from now on."""
        if value is None:
            return None
        password = settings.clean_secret("KAFKA_SASL_PASSWORD", value.get_secret_value())
        redaction.register(password)
        return SecretStr(password or "")

    @model_validator(mode="after")
    def _sasl_needs_a_sasl_protocol(self) -> KafkaConnection:
        """librdkafka silently ignores SASL settings under PLAINTEXT/SSL: say so instead."""
        sasl_set = [
            CONNECTION_SETTINGS[name]
            for name in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(self, name) is not None
        ]
        if sasl_set and not (self.security_protocol or "").startswith("SASL_"):
            raise ValueError(
                f"{', '.join(sasl_set)} set but KAFKA_SECURITY_PROTOCOL is "
                f"{self.security_protocol or 'unset (PLAINTEXT)'}: set it to SASL_SSL "
                "(or SASL_PLAINTEXT)"
            )
        return self

    @classmethod
    def from_settings(cls) -> KafkaConnection | None:
        """The connection the environment describes; None when KAFKA_BOOTSTRAP_SERVERS is unset.

        For plain-Python callers (the sidecar, the CLI); the Dagster ``kafka`` resource gets the
        same settings as ``EnvVar``s so the UI shows names, not values.
        """
        values = {field: settings.value(name) for field, name in CONNECTION_SETTINGS.items()}
        if not values["bootstrap_servers"]:
            return None
        return cls(**values)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for one client; ``extra`` adds client-specific keys."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for field, key in _LIBRDKAFKA_KEYS.items():
            value = getattr(self, field)
            if value is not None:
                config[key] = value
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        return {**config, **extra}

    def describe(self) -> str:
        """Where and how, for messages: never the user name or the password."""
        how = self.security_protocol or "PLAINTEXT"
        if self.sasl_mechanism:
            how += f"/{self.sasl_mechanism}"
        return f"{self.bootstrap_servers} ({how})"
