"""Removing account partitions that can never refresh anything.

The project's own paths only ever add ObjectIds, but the UI's "Add partition" accepts any text,
and accounts get deleted. A key that is not a canonical account id, or whose Account no longer
exists, only clutters the asset page and fails every run; removing it keeps its past runs and
materializations in the event log.
"""

from dagster import DagsterInstance
from pydantic import BaseModel

from ig_refresh_dagster.partitions import instagram_accounts, is_account_id
from ig_refresh_dagster.stores.selection import AccountSelector


class CleanupPlan(BaseModel):
    invalid: list[str]
    orphaned: list[str]

    @property
    def keys(self) -> list[str]:
        return [*self.invalid, *self.orphaned]

    def report(self) -> list[str]:
        def sample(keys: list[str]) -> str:
            shown = ", ".join(repr(k[:40]) for k in keys[:10])
            return f": {shown}{' …' if len(keys) > 10 else ''}" if keys else ""

        return [
            f"{len(self.invalid)} partition keys are not account ids{sample(self.invalid)}",
            f"{len(self.orphaned)} name no existing Account{sample(self.orphaned)}",
        ]


def plan_cleanup(instance: DagsterInstance, selector: AccountSelector) -> CleanupPlan:
    keys = instance.get_dynamic_partitions(instagram_accounts.name)
    valid = [k for k in keys if is_account_id(k)]
    existing = selector.existing(valid)
    return CleanupPlan(
        invalid=[k for k in keys if not is_account_id(k)],
        orphaned=[k for k in valid if k not in existing],
    )


def apply_cleanup(instance: DagsterInstance, plan: CleanupPlan) -> None:
    for key in plan.keys:
        instance.delete_dynamic_partition(instagram_accounts.name, key)
