"""VNN-COMP: VNN-LIB properties (vnnlib.py), verifying one instance (instance.py), result files
(results.py) and whole suites (runner.py). The command line's part is opwise/cli/vnncomp.py."""

from opwise.bounds.vnncomp.instance import load_with_engine, verify_instance
from opwise.bounds.vnncomp.results import InstanceResult, read_result, result_file_name, write_result
from opwise.bounds.vnncomp.runner import read_instances, run_suite
from opwise.bounds.vnncomp.vnnlib import parse_vnnlib

__all__ = ["InstanceResult", "load_with_engine", "parse_vnnlib", "read_instances", "read_result", "result_file_name",
           "run_suite", "verify_instance", "write_result"]
