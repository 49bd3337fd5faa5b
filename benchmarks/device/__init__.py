"""The benchmark job that runs on target hardware (phones, ARM rigs, laptops); base dependencies only."""
