"""JSON-safe copies of documents, for the refresh log's before/after and for the cache."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId


def to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    return value
