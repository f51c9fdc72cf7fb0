"""Benchmarks for ld-audiences (issue 5): cold init, ingest throughput, sync efficiency, end to end.

`make bench` (`python -m bench`) runs them all and rewrites BENCHMARKS.md; `python -m bench --quick`
is a fast smoke run on tiny sizes that writes nothing unless `--output` is given. Benchmarks are not
part of `make test`; `tests/unit/test_bench_smoke.py` only checks that this code works.
"""
