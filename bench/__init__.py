"""Benchmarks: ingest throughput, delivery latency, fan-out under rate limits, footprint.

Run ``python -m bench`` (or ``python -m bench --quick``); see docs/performance.md.
"""
