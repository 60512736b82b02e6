"""``python -m benchmarks``: the benchmark suite (:mod:`benchmarks.suite`)."""

from benchmarks.suite import main

main()
