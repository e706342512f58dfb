"""Publishes rejected events to the dead-letter topic, with ``dlq-*`` headers saying why.

- The topic is checked with the admin client before anything is produced, and never
  auto-created (a broker that auto-creates would otherwise invent it with its own defaults).
- A record refused as too large (``MSG_SIZE_TOO_LARGE``, raised by ``produce()`` above the
  producer's 1,000,000 bytes, or reported on delivery by a topic with a lower limit) is written
  truncated instead (``dlq_headers.truncated``): its size, sha256 and position stay known.
- Anything else that fails raises ``DeadLetterError``: the sensor tick fails loudly, its cursor
  does not move, and the next tick dead-letters the same events again (at least once).
- Every wait is short (topic check 3 s, delivery 4 s per attempt, all within ``timeout_seconds``)
  so a tick stays far inside Dagster's 60 s sensor evaluation timeout.
"""

from __future__ import annotations

import time
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel

from ig_refresh_dagster.intake import dlq_headers
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.dlq_headers import DeadLetter
from ig_refresh_dagster.intake.events import Rejection
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.printable import printable

CHECK_SECONDS = 3.0
DELIVERY_TIMEOUT_MS = 4000


class DeadLetterError(RuntimeError):
    """The dead-letter topic is missing, unreachable, or refused a record."""


class PublishReport(BaseModel):
    written: int = 0
    truncated: int = 0


class DeadLetterPublisher:
    def __init__(
        self, connection: KafkaConnection, topic: str, timeout_seconds: float = 9.0
    ) -> None:
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        self._admin = AdminClient(connection.client_config())
        self._producer = Producer(
            connection.client_config(
                **{
                    "enable.idempotence": False,
                    "acks": "all",
                    "message.timeout.ms": DELIVERY_TIMEOUT_MS,
                    "socket.timeout.ms": DELIVERY_TIMEOUT_MS,
                }
            )
        )

    def check_topic(self) -> None:
        future = self._admin.describe_topics(TopicCollection([self.topic]))[self.topic]
        try:
            future.result(CHECK_SECONDS)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise DeadLetterError(
                    f"dead-letter topic {self.topic!r} does not exist; create it "
                    "(INSTAGRAM_REFRESH_DLQ_TOPIC). The rejected events stay unread and are "
                    "dead-lettered once it exists."
                ) from None
            raise DeadLetterError(
                f"dead-letter topic {self.topic!r} cannot be checked: {printable(error.str())}"
            ) from None
        except FutureTimeout:
            raise DeadLetterError(
                f"dead-letter topic {self.topic!r}: no answer from Kafka within {CHECK_SECONDS}s"
            ) from None

    def publish(self, rejected: list[tuple[ConsumedMessage, Rejection]]) -> PublishReport:
        if not rejected:
            return PublishReport()
        self.check_topic()
        deadline = time.monotonic() + self.timeout_seconds
        letters = {i: dlq_headers.whole(m, r) for i, (m, r) in enumerate(rejected)}
        steps = dict.fromkeys(letters, 0)
        pending = list(letters)
        while pending:
            errors = self._send({i: letters[i] for i in pending}, deadline)
            pending, failures = [], []
            for i, error in errors.items():
                if error is None:
                    continue
                message, rejection = rejected[i]
                too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
                smaller = self._smaller(message, rejection, steps, i) if too_large else None
                if smaller is None:
                    failures.append(f"{message.position}: {printable(error.str(), 120)}")
                    continue
                letters[i] = smaller
                pending.append(i)
            if failures:
                raise DeadLetterError(
                    f"dead-letter publish to {self.topic!r} failed for {len(failures)} of "
                    f"{len(rejected)} messages: {'; '.join(failures[:3])}"
                )
        return PublishReport(
            written=len(letters), truncated=sum(letter.truncated for letter in letters.values())
        )

    @staticmethod
    def _smaller(
        message: ConsumedMessage, rejection: Rejection, steps: dict[int, int], i: int
    ) -> DeadLetter | None:
        """The next truncation that actually cuts something, if any is left."""
        while steps[i] < len(dlq_headers.TRUNCATION_STEPS):
            keep = dlq_headers.TRUNCATION_STEPS[steps[i]]
            steps[i] += 1
            letter = dlq_headers.truncated(message, rejection, keep)
            if letter is not None:
                return letter
        return None

    def _send(
        self, letters: dict[int, DeadLetter], deadline: float
    ) -> dict[int, KafkaError | None]:
        results: dict[int, KafkaError | None] = {}

        def report(i: int):
            return lambda error, _msg: results.__setitem__(i, error)

        for i, letter in letters.items():
            try:
                self._producer.produce(
                    self.topic,
                    key=letter.key,
                    value=letter.value,
                    headers=letter.headers,
                    on_delivery=report(i),
                )
            except KafkaException as exc:
                results[i] = exc.args[0]
        unconfirmed = self._producer.flush(max(deadline - time.monotonic(), 0.0))
        if unconfirmed:
            raise DeadLetterError(
                f"dead-letter publish to {self.topic!r}: {unconfirmed} of {len(letters)} "
                f"records unconfirmed after {self.timeout_seconds}s (Kafka down?)"
            )
        return results
