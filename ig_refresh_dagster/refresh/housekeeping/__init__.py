"""The instance's upkeep: what a refresh run is, for every component that looks at runs."""
