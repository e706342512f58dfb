"""How every Kafka client of the pipeline reaches the cluster: the sensor's consumer and admin
client, the dead-letter producer, the ``/ready`` check and the CLI all build their librdkafka
configuration here, so authentication set once reaches all of them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class KafkaConnection(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for one client; ``extra`` adds client-specific keys."""
        return {"bootstrap.servers": self.bootstrap_servers, **extra}
