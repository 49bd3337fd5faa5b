"""The benchmark job that runs on target hardware (phones, ARM rigs, laptops); base dependencies only.

``run_bench`` measures each model of a bundle or an export dir in its own process (cold start,
decision latency for the real call shapes, throughput, peak RSS) and returns a report that
``report.schema.json`` describes; ``load_report`` reads one back and refuses anything else.
"""

from benchmarks.device._errors import BenchError
from benchmarks.device._schema import load_report
from benchmarks.device.job import BenchSettings, run_bench

__all__ = ["BenchError", "BenchSettings", "load_report", "run_bench"]
