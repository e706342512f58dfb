"""The whole product through real processes: the daemon, the UI in a browser, the topology."""
