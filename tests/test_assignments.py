"""The classroom autograder (assignments/test_autograder.py) run as a student would: it
passes the reference solutions, fails every unfilled stub with a readable message, and
catches a classic bug in each exercise."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["tree_attention_mask", "pseudo_attention_mask", "greedy_verify",
         "transfer_training_mask", "rejection_sample", "compact_cache"]
AUTOGRADER = "assignments/test_autograder.py"
CATCHES = ["test_ex1_tree_mask_random_trees", "test_ex2_pseudo_mask_random_trees",  # one classic bug each
           "test_ex3_greedy_random_cases", "test_ex4_training_mask_is_the_chain_tree_pseudo_mask",
           "test_ex5_token_distribution_is_exactly_p[0]",  # the chi-square test has power
           "test_ex6_random_cases"]

BUGGY = '''
import torch
from reference import *  # noqa: F401,F403  (then one classic mistake per exercise)


def tree_attention_mask(parents):  # the parent only, not every ancestor
    M = torch.eye(len(parents), dtype=torch.bool)
    for n in range(1, len(parents)):
        M[n, parents[n]] = True
    return M


def pseudo_attention_mask(tree_mask, k):  # .repeat where .repeat_interleave was meant
    N = tree_mask.shape[0]
    M = torch.zeros(N + N * k, N + N * k, dtype=torch.bool)
    M[:N, :N] = tree_mask
    M[N:, :N] = tree_mask.repeat(k, 1)
    M[N:, N:] = torch.kron(torch.eye(N, dtype=torch.bool), torch.ones(k, k, dtype=torch.bool).tril())
    return M


def greedy_verify(parents, tokens, next_ids):  # ties go to the higher index
    depth, ok, best = [0] * len(parents), [True] * len(parents), 0
    for n in range(1, len(parents)):
        p = parents[n]
        depth[n], ok[n] = depth[p] + 1, ok[p] and int(tokens[n]) == int(next_ids[p])
        if ok[n] and depth[n] >= depth[best]:
            best = n
    path = [best]
    while path[-1]:
        path.append(parents[path[-1]])
    return path[::-1]


def transfer_training_mask(T, k):  # pseudo (j, i) peeks at real j+i, the token it stands in for
    M = torch.zeros(T + T * k, T + T * k, dtype=torch.bool)
    M[:T, :T] = torch.ones(T, T, dtype=torch.bool).tril()
    for j in range(T):
        for i in range(1, k + 1):
            row = T + j * k + i - 1
            M[row, :min(T, j + i + 1)] = True
            M[row, T + j * k: row + 1] = True
    return M


def rejection_sample(p, candidates, uniform, sample):  # forgets to renormalise the residual
    r = p.clone()
    for c, tok in enumerate(candidates):
        if uniform() < r[tok]:
            return c, tok
        r[tok] = 0
    return None, sample(r / r.sum())


def compact_cache(k_cache, v_cache, length, keep):  # one slot at a time: overlapping moves clobber
    for i, j in enumerate(keep):
        k_cache[:, :, :, length + i] = k_cache[:, :, :, length + int(j)]
        v_cache[:, :, :, length + i] = v_cache[:, :, :, length + int(j)]
    return length + len(keep)
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Autograde the reference, the stubs and the buggy solution, in parallel -> (exit code, output) each."""
    tmp = tmp_path_factory.mktemp("autograder")
    (tmp / "buggy.py").write_text(BUGGY)
    # The autograder uses no third-party pytest plugin; not loading them (hypothesis, xdist, ...) saves each
    # of the three runs a second of start-up.
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    runs = {}
    # every test for the reference and the stubs; for the buggy solution the tests expected to catch it
    for name, solution, tests in [("reference", "reference", [AUTOGRADER]), ("stubs", "exercises", [AUTOGRADER]),
                                  ("buggy", tmp / "buggy.py", [f"{AUTOGRADER}::{t}" for t in CATCHES])]:
        out = open(tmp / f"{name}.txt", "w+")  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                                cwd=ROOT, env=dict(env, HT_SOLUTION=str(solution)),
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        runs[name] = proc, out
    results = {}
    for name, (proc, out) in runs.items():
        code = proc.wait(timeout=300)
        out.seek(0)
        results[name] = code, out.read()
        out.close()
    return results


def test_reference_passes(graded):
    code, out = graded["reference"]
    assert code == 0, out[-3000:]
    assert re.search(r"^\d+ passed in", out, re.M), out[-3000:]


def test_stubs_fail_every_test_with_a_hint(graded):
    code, out = graded["stubs"]
    assert code == 1, out[-3000:]
    assert re.search(r"^\d+ failed in", out, re.M), out[-3000:]  # failed, and nothing passed or errored
    for n, name in enumerate(NAMES, 1):
        assert f"exercise {n} {name} is not implemented yet: TODO" in out
    assert "raise NotImplementedError" not in out  # a message, not a traceback into the stub


def test_each_classic_bug_is_caught(graded):
    code, out = graded["buggy"]
    assert code == 1, out[-3000:]
    failed = set(re.findall(r"^FAILED \S+::(\S+)", out, re.M))
    for test in CATCHES:
        assert test in failed, (test, sorted(failed))
