"""The instance's upkeep: the log reconciler, the dead-run reaper, the partition cap and
retention. Nothing here launches a refresh."""
