"""One short line on why a file failed to load, for the error opwise raises in its place."""

from __future__ import annotations

import re


def describe_load_error(error: BaseException) -> str:
    """The error's type and message on one line, at most 300 characters; for a `torch.load(weights_only=True)`
    refusal (a paragraph of advice) just the Python object the file needs.

    >>> describe_load_error(Exception("Weights only load failed. ... Unsupported global: GLOBAL os.system was not"))
    'it needs the Python object os.system, which weights_only refuses'
    >>> describe_load_error(RuntimeError("Error(s) in loading state_dict:\\n  Missing key(s): 'w'"))
    "RuntimeError: Error(s) in loading state_dict: Missing key(s): 'w'"
    """
    text = " ".join(str(error).split())
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused and "weights only" in text.lower():
        return f"it needs the Python object {refused.group(1)}, which weights_only refuses"
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
