"""VNN-COMP: VNN-LIB properties (vnnlib.py), verifying one instance (instance.py), result files
(results.py) and whole suites (runner.py). The command line's part is opwise/cli/vnncomp.py."""

from opwise.bounds.vnncomp.instance import load_with_engine, verify_instance
from opwise.bounds.vnncomp.results import (InstanceResult, is_complete, read_result, result_file_name,
                                           result_file_names, write_result)
from opwise.bounds.vnncomp.runner import read_instances, run_suite, suite_bar
from opwise.bounds.vnncomp.vnnlib import parse_vnnlib, violates

__all__ = ["InstanceResult", "is_complete", "load_with_engine", "parse_vnnlib", "read_instances", "read_result",
           "result_file_name", "result_file_names", "run_suite", "suite_bar", "verify_instance", "violates",
           "write_result"]
