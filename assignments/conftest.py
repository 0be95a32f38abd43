"""Collect the autograder only when pytest is pointed at this folder.

The project's own `python -m pytest` (run from the repository root) would otherwise
grade the unfilled exercises.py and fail; tests/test_assignments.py grades the
reference solutions instead.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path, config):
    if collection_path.name != "test_autograder.py":
        return None
    start = config.invocation_params.dir
    targets = [(start / a.split("::")[0]).resolve() for a in config.args] or [start.resolve()]
    if not any(t == HERE or HERE in t.parents for t in targets):
        return True
    return None
