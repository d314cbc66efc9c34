"""Measurements against reference tools: run one from the checkout's root with `python -m benchmarks.NAME`
(the root is then on the import path, so no PYTHONPATH is needed); `python -m benchmarks` lists them."""
