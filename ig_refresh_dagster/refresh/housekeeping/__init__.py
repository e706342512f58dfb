"""The instance's upkeep: what a refresh run is (one definition, for every component that
looks at runs), the log reconciler, the dead-run reaper, the partition cap and retention.
Nothing here launches a refresh."""
