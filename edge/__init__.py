"""The edge node: pulls, verifies and installs signed bundles, and decides with them; base dependencies only."""
