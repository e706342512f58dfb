"""The Dagster layer, one folder per question: ``run/`` (what one refresh does), ``launch/``
(why a refresh starts, and with what tags), ``housekeeping/`` (the instance's upkeep; launches
nothing)."""
