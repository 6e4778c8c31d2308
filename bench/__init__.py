"""Throughput, CPU, memory and latency benchmark of the cross-sell worker: ``python -m bench --help``."""
