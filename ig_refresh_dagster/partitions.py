"""The account partitions, and the one rule for what an account id (a partition key) is.

A partition key is the Account's ObjectId as 24 lower-case hex digits: one account, one
partition, whatever case the event carried.
"""

from __future__ import annotations

import re

from dagster import DynamicPartitionsDefinition

ACCOUNT_ID_PATTERN = r"[0-9a-fA-F]{24}"
_CANONICAL = re.compile(r"[0-9a-f]{24}")

instagram_accounts = DynamicPartitionsDefinition(name="instagram_accounts")


def is_account_id(key: str) -> bool:
    """True for a canonical partition key (lower-case 24-hex ObjectId)."""
    return bool(_CANONICAL.fullmatch(key))
