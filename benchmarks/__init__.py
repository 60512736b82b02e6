"""Speed and memory measurements, run by hand (``python -m benchmarks.<name>``), not by the tests.

Every figure is reported as a ratio against a reference measured in the same run.
"""
