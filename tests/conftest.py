"""Put the repository root on sys.path, so tests import model, tree, transfer, decode, train;
and run torch on one thread, here and in the processes the tests start (notebook kernels, the
autograder, the command line): the models are tiny, and on a busy machine two threads per
process fight each other for the cores (test_decode.py: 290 s on two threads, 31 s on one).

On pytest-xdist workers (`-n 2 --dist loadgroup`, the README's command) the tests are also
ordered longest first, so that no worker is left running a long test alone at the end, and
the modules whose module-scoped fixtures cost seconds run whole on one worker (set up once)."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Modules that run whole on one worker: SmolLM2 and transformers' reading of it load once (half a
# minute); the autograder grades once for its three tests.
ONE_WORKER = {"test_smollm2.py", "test_assignments.py"}

# Rough serial seconds on this 2-core VM of the tests worth starting early (node id prefixes).
# Only an order: a name missing here, or a stale one, costs some balance, never a test.
LONG = {
    "tests/test_notebooks.py::test_notebook_runs[07": 40,  # SmolLM2: loading, decoding, accuracy, cosine
    "tests/test_smollm2.py": 40,
    "tests/test_notebooks.py::test_notebook_runs[05": 26,
    "tests/test_notebooks.py::test_notebook_runs[04": 20,
    "tests/test_notebooks.py::test_notebook_runs[02": 19,
    "tests/test_notebooks.py::test_notebook_runs[06": 17,
    "tests/test_assignments.py": 12,
    "tests/test_notebooks.py::test_notebook_runs[01": 11,
    "tests/test_decode.py::test_sampling_matches_the_model[temperature": 11,
    "tests/test_notebooks.py::test_notebook_runs[03": 9,
    "tests/test_baselines.py::test_sampling_matches_the_model[self-spec": 8,
    "tests/test_shipped.py::test_default_command_is_hidden_transfer_and_equals_ar": 7,
    "tests/test_decode.py::test_sampling_matches_the_model": 6,
    "tests/test_baselines.py::test_sampling_matches_the_model": 4,
    "tests/test_cli.py::test_loading_keeps_no_second_copy_of_the_weights": 4,
    "tests/test_transfer.py::test_short_drafter_run_learns": 3,
    "tests/test_model.py::test_hf_parity": 3,
    "tests/test_decode.py::test_sampling_test_has_power": 2,
    "tests/test_baselines.py::test_eos_and_token_limit_inside_an_accepted_path": 2,
    "tests/test_decode.py::test_eos_inside_an_accepted_path": 2,
    "tests/test_cli.py::test_chat_flags_are_checked": 2,
    "tests/test_cli.py::test_peer_gets_the_rope_scaling": 2,
}


def expected_seconds(item):
    return max((s for prefix, s in LONG.items() if item.nodeid.startswith(prefix)), default=0)


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one pytest-xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    # Only for loadgroup, which hands out one test (or group) at a time in this order; a serial run
    # keeps the files' order (each module's fixtures set up once), and --dist load sends runs of
    # consecutive tests, which would put all the long ones on one worker.
    if getattr(config.option, "loadgroup", False):  # set on the workers of --dist loadgroup
        items.sort(key=expected_seconds, reverse=True)  # stable: a module's tests stay in order
