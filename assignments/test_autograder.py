"""Autograder for exercises.py.

    cd assignments && python -m pytest -q test_autograder.py          # grade exercises.py
    python -m pytest -q test_autograder.py -k ex3                     # one exercise only
    HT_SOLUTION=reference python -m pytest -q test_autograder.py      # grade the reference
    HT_SOLUTION=/path/to/alice.py python -m pytest -q test_autograder.py   # grade any file

Every expected answer is computed here by a brute-force rule written straight from
the docstrings (ancestor sets, root paths, the sampling rule one step at a time), not
taken from the project's code, so the reference solutions are graded like any other.
"""
import importlib
import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # exercises.py and reference.py; the project's model.py

from model import ModelArgs, Transformer  # noqa: E402  (exercise 6 checks a real forward pass)


def load_solution():
    name = os.environ.get("HT_SOLUTION", "exercises")
    if name.endswith(".py"):  # a file anywhere, e.g. one student's submission
        spec = importlib.util.spec_from_file_location("solution", name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


SOLUTION = load_solution()
EXERCISE = {"tree_attention_mask": 1, "pseudo_attention_mask": 2, "greedy_verify": 3,
            "transfer_training_mask": 4, "rejection_sample": 5, "compact_cache": 6}


def call(name, *args):
    """Run the solution's function; a stub or a crash becomes a readable failure."""
    n = EXERCISE[name]
    fn = getattr(SOLUTION, name, None)
    if fn is None:
        pytest.fail(f"exercise {n}: {SOLUTION.__name__} has no function {name}", pytrace=False)
    try:
        return fn(*args)
    except NotImplementedError as e:
        todo = str(e)  # fail outside the except block: no "during handling" traceback
    except Exception as e:
        e.add_note(f"exercise {n}: {name}{shorten(args)} raised {type(e).__name__}")
        raise
    pytest.fail(f"exercise {n} {name} is not implemented yet: {todo}", pytrace=False)


def shorten(args):
    text = repr(tuple(args))
    return text if len(text) < 300 else text[:300] + "...)"


# ----------------------------------------------------------------------------- brute-force rules

def ancestors(parents, n):
    out = []
    while parents[n] != -1:
        n = parents[n]
        out.append(n)
    return sorted(out)


def random_parents(rng, n_nodes):
    return [-1] + [rng.randrange(n) for n in range(1, n_nodes)]


def check_mask(got, want, explain, what, why=lambda r: ""):
    """got: the solution's mask; want: for each row, the set of columns it must see;
    explain(row) says in words what that row is and what it should see; why(row), why it matters."""
    M = len(want)
    if not isinstance(got, torch.Tensor) or got.dtype != torch.bool or tuple(got.shape) != (M, M):
        desc = f"{got.dtype} tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        pytest.fail(f"{what}: expected a ({M}, {M}) torch.bool tensor, got a {desc}", pytrace=False)
    wrong = [r for r in range(M) if set(got[r].nonzero().flatten().tolist()) != want[r]]
    if wrong:
        r = wrong[0]
        seen = sorted(got[r].nonzero().flatten().tolist())
        pytest.fail(f"{what}: row {r} ({explain(r)}) should see columns {sorted(want[r])}; "
                    f"got {seen}. Wrong rows ({len(wrong)} of {M}): {wrong[:12]}. {why(r)}".rstrip(), pytrace=False)


def tree_rows(parents):
    return [set(ancestors(parents, n)) | {n} for n in range(len(parents))]


def explain_node(parents):
    return lambda n: f"node {n} sees its ancestors {ancestors(parents, n)} and itself"


# Why each kind of row matters, appended to a wrong row's message.
WHY_NODE = ("Why it matters: a node's logits must be the ones plain decoding computes after its own path; "
            "a node that sees a token off its path, or misses one on it, is scored on a text that is not its "
            "own, and verification then accepts tokens plain decoding would not emit.")
WHY_NODE_PSEUDO = ("Why it matters: a tree node that sees a pseudo token computes something the model alone "
                   "never would, and the output stops being plain decoding's.")
WHY_PSEUDO = ("Why it matters: at decoding time pseudo i of a node has exactly that node's context and its own "
              "earlier pseudo tokens; seeing anything else (another branch, a later pseudo token) gives it "
              "inputs it was not trained on, or information it cannot have.")
WHY_TRAINING = ("Why it matters: pseudo (j, i) must see what it will see when decoding, the tokens up to j and its own "
                "earlier pseudo tokens. Seeing real j+1 or later would show it a state that does not exist at decode "
                "time, where nothing after j is known yet: a drafter trained with that peek learns to copy the "
                "answer and drafts badly when it is gone.")


HAND_TREES = [
    [-1],                              # the root alone
    [-1, 0, 0, 1],                     # the docstring's example
    [-1, 0, 1, 2, 3],                  # a chain
    [-1, 0, 0, 0, 1, 1, 2, 4],         # Medusa-like: wide at the top
    [-1, 0, 1, 0, 3, 2, 1],            # parents first, but not sorted by depth
]


# ----------------------------------------------------------------------------- exercise 1

@pytest.mark.parametrize("parents", HAND_TREES, ids=lambda p: f"parents={p}")
def test_ex1_tree_mask_hand_trees(parents):
    got = call("tree_attention_mask", parents)
    check_mask(got, tree_rows(parents), explain_node(parents), f"tree_attention_mask({parents})",
               lambda r: WHY_NODE)


def test_ex1_tree_mask_random_trees():
    rng = random.Random(1)
    for _ in range(40):
        parents = random_parents(rng, rng.randint(1, 14))
        got = call("tree_attention_mask", parents)
        check_mask(got, tree_rows(parents), explain_node(parents), f"tree_attention_mask({parents})",
                   lambda r: WHY_NODE)


# ----------------------------------------------------------------------------- exercise 2

def bool_mask(rows):
    M = len(rows)
    out = torch.zeros(M, M, dtype=torch.bool)
    for r, cols in enumerate(rows):
        out[r, sorted(cols)] = True
    return out


def check_pseudo(parents, k):
    N = len(parents)
    nodes = tree_rows(parents)
    want = nodes + [nodes[n] | {N + n * k + j - 1 for j in range(1, i + 1)}
                    for n in range(N) for i in range(1, k + 1)]

    def explain(r):
        if r < N:
            return explain_node(parents)(r) + ", and no pseudo token"
        n, i = divmod(r - N, k)
        own = [N + n * k + j for j in range(i + 1)]
        return (f"pseudo {i + 1} of node {n} sees node {n}'s root path {ancestors(parents, n) + [n]} "
                f"and pseudo 1..{i + 1} of node {n} at {own}")
    got = call("pseudo_attention_mask", bool_mask(nodes), k)
    check_mask(got, want, explain, f"pseudo_attention_mask(mask of parents={parents}, k={k})",
               lambda r: WHY_NODE_PSEUDO if r < N else WHY_PSEUDO)


@pytest.mark.parametrize("parents", HAND_TREES, ids=lambda p: f"parents={p}")
@pytest.mark.parametrize("k", [2, 1, 0])
def test_ex2_pseudo_mask_hand_trees(parents, k):
    check_pseudo(parents, k)


def test_ex2_pseudo_mask_docstring_example():
    want = ["100000", "110000", "101000", "101100", "110010", "110011"]
    got = call("pseudo_attention_mask", bool_mask(tree_rows([-1, 0])), 2)
    check_mask(got, [{c for c, x in enumerate(row) if x == "1"} for row in want],
               lambda r: "see the docstring's example", "pseudo_attention_mask(parents [-1, 0], k=2)")


def test_ex2_pseudo_mask_random_trees():
    rng = random.Random(2)
    for _ in range(30):
        check_pseudo(random_parents(rng, rng.randint(1, 9)), rng.randint(0, 4))


# ----------------------------------------------------------------------------- exercise 3

def accepted_path(parents, tokens, next_ids):
    """The rule, spelled out: every node's root path, kept when every step on it is ok."""
    best = [0]
    for n in range(len(parents)):
        path = ancestors(parents, n) + [n]
        if all(tokens[c] == next_ids[parents[c]] for c in path[1:]) and len(path) > len(best):
            best = path  # strictly longer: the lower index keeps ties
    return best


def check_greedy(parents, tokens, next_ids):
    args = f"greedy_verify(parents={parents}, tokens={tokens}, next_ids={next_ids})"
    got = call("greedy_verify", parents, torch.tensor(tokens), torch.tensor(next_ids))
    got = [int(x) for x in got]
    want = accepted_path(parents, tokens, next_ids)
    if got == want:
        return
    why = f"{args} should return {want}; got {got}"
    if not got or got[0] != 0 or any(not 0 <= b < len(parents) or parents[b] != a for a, b in zip(got, got[1:])):
        why += ": that is not a path from the root [0, child, grandchild, ...]"
    elif bad := [c for c in got[1:] if tokens[c] != next_ids[parents[c]]]:
        c = bad[0]
        why += (f": node {c} is not accepted, its token {tokens[c]} is not its parent {parents[c]}'s "
                f"argmax {next_ids[parents[c]]}. Why it matters: every emitted token must be the one plain "
                f"greedy decoding would emit after the same text; this one is not, so the output changes")
    elif len(got) < len(want):
        why += (f": {want} is accepted too, and longer. Why it matters: the output would still be right, but "
                f"each step would emit fewer tokens than it could: tau, the whole point, drops")
    else:
        why += (f": both are accepted and as long; ties go to the lower end node, {want[-1]}. Why it matters: "
                f"either would be lossless, but the next drafts come from the chosen node, so a fixed rule "
                f"keeps decoding reproducible (and this grading deterministic)")
    pytest.fail(why, pytrace=False)


@pytest.mark.parametrize("parents,tokens,next_ids", [
    pytest.param([-1, 0, 0, 1, 2], [5, 7, 8, 9, 3], [8, 9, 3, 1, 1], id="the docstring's example"),
    pytest.param([-1], [4], [2], id="the root alone: always [0]"),
    pytest.param([-1, 0, 1, 2], [1, 2, 3, 4], [2, 3, 4, 0], id="a chain, all accepted"),
    pytest.param([-1, 0, 1, 2], [1, 2, 9, 4], [2, 3, 4, 0], id="a chain, stops at node 1"),
    pytest.param([-1, 0, 0, 1, 2], [0, 5, 6, 7, 8], [9, 7, 8, 0, 0], id="nothing accepted: [0]"),
    pytest.param([-1, 0, 0, 1, 2], [0, 5, 5, 7, 8], [5, 7, 8, 0, 0], id="equal siblings, both deep: tie -> node 3"),
    pytest.param([-1, 0, 1, 0, 3, 3], [0, 1, 2, 1, 2, 2], [1, 2, 0, 2, 0, 0], id="ties between 2, 4, 5 -> node 2"),
    pytest.param([-1, 0, 0, 2, 1], [0, 1, 1, 2, 2], [1, 2, 2, 0, 0], id="tie: node 3 (child of 2) before node 4"),
])
def test_ex3_greedy_hand_cases(parents, tokens, next_ids):
    check_greedy(parents, tokens, next_ids)


def test_ex3_greedy_random_cases():
    rng = random.Random(3)
    for _ in range(300):
        parents = random_parents(rng, rng.randint(1, 12))
        V = rng.randint(1, 3)  # a small vocabulary: many nodes accepted, many ties
        check_greedy(parents, [rng.randrange(V) for _ in parents], [rng.randrange(V) for _ in parents])


# ----------------------------------------------------------------------------- exercise 4

def check_training(T, k):
    want = [set(range(j + 1)) for j in range(T)]
    want += [set(range(j + 1)) | {T + j * k + m for m in range(i)} for j in range(T) for i in range(1, k + 1)]

    def explain(r):
        if r < T:
            return f"real token {r} sees real 0..{r} and no pseudo token"
        j, i = divmod(r - T, k)
        return (f"pseudo ({j}, {i + 1}) sees real 0..{j} and pseudo ({j}, 1..{i + 1}) "
                f"at {[T + j * k + m for m in range(i + 1)]}")
    check_mask(call("transfer_training_mask", T, k), want, explain, f"transfer_training_mask(T={T}, k={k})",
               lambda r: WHY_TRAINING if r >= T else "Why it matters: real tokens must compute exactly what "
               "a plain forward computes (their argmax is the training target), so they see no pseudo token.")


@pytest.mark.parametrize("T,k", [(2, 2), (1, 1), (1, 3), (3, 1), (4, 0), (5, 3), (6, 4)])
def test_ex4_training_mask(T, k):
    check_training(T, k)


def test_ex4_training_mask_is_the_chain_tree_pseudo_mask():
    # a sequence is a chain-shaped tree: the brute-force rules of exercises 2 and 4 must agree
    for T, k in [(3, 2), (4, 3)]:
        chain = list(range(-1, T - 1))
        nodes = tree_rows(chain)
        pseudo = nodes + [nodes[n] | {T + n * k + j for j in range(i)} for n in range(T) for i in range(1, k + 1)]
        check_mask(call("transfer_training_mask", T, k), pseudo,
                   lambda r: "the pseudo mask of a chain tree, exercise 2", f"transfer_training_mask(T={T}, k={k})",
                   lambda r: WHY_TRAINING if r >= T else "")


# ----------------------------------------------------------------------------- exercise 5

class Script:
    """uniform() that returns scripted draws and sample() that records its argument."""

    def __init__(self, draws, sampled_token=-7):
        self.draws, self.calls, self.sampled, self.token = list(draws), 0, [], sampled_token

    def uniform(self):
        if self.calls == len(self.draws):
            pytest.fail(f"exercise 5 rejection_sample: uniform() called {self.calls + 1} times; "
                        f"call it once per child tried", pytrace=False)
        self.calls += 1
        return self.draws[self.calls - 1]

    def sample(self, probs):
        self.sampled.append(probs.clone())
        return self.token


def rejection_rule(p, candidates, draws):
    """The rule one step at a time, in float64 -> (c or None, the uniform draws used, the residual
    sample() gets or None, the steps in words)."""
    r, steps = [float(x) for x in p], []
    for c, tok in enumerate(candidates):
        u = draws[c]
        if u < r[tok]:
            steps.append(f"child {c} (token {tok}): u = {u:.4g} < r[{tok}] = {r[tok]:.4g}, accept -> return ({c}, {tok})")
            return c, c + 1, None, steps
        steps.append(f"child {c} (token {tok}): u = {u:.4g} >= r[{tok}] = {r[tok]:.4g}, reject")
        r[tok] = 0.0
        total = sum(r)
        r = [x / total for x in r]
        steps[-1] += f" -> r = {[round(x, 4) for x in r]}"
    steps.append("every child rejected -> return (None, sample(r))")
    return None, len(candidates), r, steps


def check_rejection(p, candidates, draws):
    p = torch.tensor(p, dtype=torch.float64)
    before = p.clone()
    script = Script(draws)
    args = (f"rejection_sample(p={[round(x, 4) for x in p.tolist()]}, candidates={candidates}) "
            f"with uniform draws {[round(u, 4) for u in draws]}")
    got = call("rejection_sample", p, list(candidates), script.uniform, script.sample)
    want, n_draws, residual, steps = rejection_rule(p.tolist(), candidates, draws)
    if not torch.equal(p, before):
        pytest.fail(f"{args}: p was modified in place; work on a copy (p.clone())", pytrace=False)
    if not isinstance(got, tuple) or len(got) != 2:
        pytest.fail(f"{args}: return a pair (accepted index or None, token); got {got!r}", pytrace=False)
    c, tok = None if got[0] is None else int(got[0]), int(got[1])
    # sample() returns a stand-in token that is no candidate; name it rather than print its value
    shown = f"({c}, " + ("the token sample() returned)" if tok == script.token else f"{tok})")
    problems = []
    if want is None and (c is not None or tok != script.token):
        problems.append(f"should return (None, the token sample(r) returns); got {shown}")
    if want is not None and (c, tok) != (want, candidates[want]):
        problems.append(f"should return ({want}, {candidates[want]}); got {shown}")
    if script.calls != n_draws:
        problems.append(f"uniform() should be called {n_draws} times, once per child tried; "
                        f"it was called {script.calls} times")
    if len(script.sampled) != (want is None):
        problems.append(f"sample() should be called {int(want is None)} times; it was called {len(script.sampled)} times")
    elif want is None:
        r = script.sampled[0]
        if tuple(r.shape) != tuple(p.shape) or not torch.allclose(
                r.double(), torch.tensor(residual, dtype=torch.float64), atol=1e-6):
            problems.append(f"sample() should get the residual r = {[round(x, 4) for x in residual]} "
                            f"(rejected tokens zeroed, renormalised); it got {r.tolist()}")
    if problems:
        pytest.fail(f"{args}: " + "; ".join(problems) + ". The rule, step by step:\n    " + "\n    ".join(steps) +
                    "\nWhy it matters: only this exact sequence of decisions emits each token with probability "
                    "p[token]; any other, however close, changes the distribution the model samples from.",
                    pytrace=False)


@pytest.mark.parametrize("p,candidates,draws", [
    pytest.param([0.1, 0.2, 0.3, 0.4], [3, 1], [0.5, 0.3], id="the docstring's example: child 1 accepted"),
    pytest.param([0.1, 0.2, 0.3, 0.4], [3, 1], [0.5, 0.9], id="both rejected: sample the residual"),
    pytest.param([0.1, 0.2, 0.3, 0.4], [3, 1], [0.39, 0.0], id="the first child accepted"),
    pytest.param([0.1, 0.2, 0.3, 0.4], [], [], id="no children: sample p itself"),
    pytest.param([0.5, 0.5, 0.0], [2, 0], [0.0, 0.6], id="r = 0 is never accepted, not even by u = 0"),
    pytest.param([0.5, 0.25, 0.25], [0, 1], [0.5, 0.5], id="u == r: rejected (u < r, strictly)"),
    pytest.param([0.2, 0.3, 0.5], [0, 1], [0.9, 0.374], id="renormalised: r[1] = 0.3 / 0.8 = 0.375"),
    pytest.param([0.6, 0.4], [0, 1], [0.7, 0.99], id="the last token left has r = 1: accepted"),
])
def test_ex5_scripted_draws(p, candidates, draws):
    check_rejection(p, candidates, draws)


def test_ex5_random_scripted_draws():
    rng = random.Random(5)
    for _ in range(200):
        V = rng.randint(2, 8)
        w = [rng.random() ** 2 for _ in range(V)]
        p = [x / sum(w) for x in w]
        candidates = rng.sample(range(V), rng.randint(0, V - 1))
        check_rejection(p, candidates, [rng.random() for _ in candidates])


# Three distributions and candidate lists (top-ranked first, unlikely first, one child).
EXACT_CASES = [
    ([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], [0, 1, 2]),
    ([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], [5, 3, 0, 1]),
    ([0.05, 0.10, 0.45, 0.40], [3]),
]
N_DRAWS = 4000
# Under an exact rule the chi-square p-value below is uniform, so asserting p > P_FAIL fails a
# correct solution with probability 1e-6 per case; the seeds are fixed, so grading is repeatable.
P_FAIL = 1e-6


@pytest.mark.parametrize("case", range(len(EXACT_CASES)))
def test_ex5_token_distribution_is_exactly_p(case):
    probs, candidates = EXACT_CASES[case]
    p = torch.tensor(probs, dtype=torch.float64)
    g = torch.Generator().manual_seed(500 + case)
    uniform = lambda: float(torch.rand((), generator=g, dtype=torch.float64))  # noqa: E731
    sample = lambda r: int(torch.multinomial(r, 1, generator=g))  # noqa: E731
    counts = torch.zeros(len(probs), dtype=torch.float64)
    for _ in range(N_DRAWS):
        c, tok = call("rejection_sample", p, list(candidates), uniform, sample)
        c, tok = None if c is None else int(c), int(tok)
        if (c is None) == (tok in candidates) or c is not None and (not 0 <= c < len(candidates) or candidates[c] != tok):
            pytest.fail(f"exercise 5: rejection_sample(p={probs}, candidates={candidates}) returned ({c}, {tok}): "
                        f"an accepted child must come with its own token, and a sampled token can never be "
                        f"a rejected candidate", pytrace=False)
        counts[tok] += 1
    expected = p * N_DRAWS  # every cell expects >= 200 draws: the chi-square approximation holds
    stat = float(((counts - expected) ** 2 / expected).sum())
    half_df = torch.tensor((len(probs) - 1) / 2, dtype=torch.float64)
    p_value = float(torch.special.gammaincc(half_df, torch.tensor(stat / 2, dtype=torch.float64)))
    if p_value <= P_FAIL:
        freq = [round(x, 3) for x in (counts / N_DRAWS).tolist()]
        pytest.fail(f"exercise 5: over {N_DRAWS} calls, rejection_sample(p={probs}, candidates={candidates}) "
                    f"emitted tokens with frequencies {freq}, not p (chi-square p-value {p_value:.1e}). "
                    f"Check the residual: zero each rejected token, renormalise, and sample from r, not p. "
                    f"Why it matters: sampling with the tree must give the model's own distribution, or it is "
                    f"no longer lossless",
                    pytrace=False)


# ----------------------------------------------------------------------------- exercise 6

def check_compaction(shape, length, keep, as_tensor=False):
    g = torch.Generator().manual_seed(len(keep) * 1000 + length)
    k_cache, v_cache = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    k0, v0 = k_cache.clone(), v_cache.clone()
    args = f"compact_cache(cache of shape {shape}, length={length}, keep={keep})"
    got = call("compact_cache", k_cache, v_cache, length, torch.tensor(keep, dtype=torch.long) if as_tensor else keep)
    want = length + len(keep)
    if not isinstance(got, (int, torch.Tensor)) or isinstance(got, torch.Tensor) and got.numel() != 1:
        pytest.fail(f"{args}: return the new length, an int; got {got!r} (move the entries in place, "
                    f"in the tensors passed in)", pytrace=False)
    if int(got) != want:
        pytest.fail(f"{args}: should return the new length {length} + {len(keep)} = {want}; got {int(got)}",
                    pytrace=False)
    for name, now, before in [("k_cache", k_cache, k0), ("v_cache", v_cache, v0)]:
        if not torch.equal(now[:, :, :, :length], before[:, :, :, :length]):
            pytest.fail(f"{args}: the committed slots 0..{length - 1} of {name} must not change", pytrace=False)
        for i, j in enumerate(keep):
            dst, src = length + i, length + j
            if not torch.equal(now[:, :, :, dst], before[:, :, :, src]):
                held = [s for s in range(shape[3]) if torch.equal(now[:, :, :, dst], before[:, :, :, s])]
                what = f"what was in slot {held[0]}" if held else "entries that were in no single slot before"
                pytest.fail(f"{args}: slot {dst} of {name} should hold new token {j}, which was in slot {src}; "
                            f"it holds {what}. Why it matters: every later pass attends to these slots as the "
                            f"accepted text, in order; a wrong entry silently changes the model's output",
                            pytrace=False)


def test_ex6_docstring_example():
    check_compaction((2, 1, 2, 10, 4), 3, [0, 2, 3])


@pytest.mark.parametrize("keep", [[0], [], [1], [0, 1, 2, 3], [1, 3, 6], [2, 0], [3, 1, 2]],
                         ids=lambda k: f"keep={k}")
def test_ex6_hand_cases(keep):
    check_compaction((2, 2, 3, 16, 4), 5, keep)


def test_ex6_keep_as_tensor():
    check_compaction((1, 1, 2, 12, 2), 4, [0, 3, 5], as_tensor=True)


def test_ex6_random_cases():
    rng = random.Random(6)
    for _ in range(60):
        length, pending = rng.randint(0, 6), rng.randint(1, 8)
        shape = (rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 3), length + pending + rng.randint(0, 3),
                 rng.randint(1, 4))
        keep = rng.sample(range(pending), rng.randint(0, pending))  # any order: the hard case for in place
        check_compaction(shape, length, keep, as_tensor=rng.random() < 0.3)


@pytest.mark.parametrize("path", [[0], [0, 1, 3, 6], [0, 2, 5, 7], [0, 1, 4]], ids=lambda p: f"keep={p}")
def test_ex6_tree_pass_then_compaction_equals_plain_forward(path):
    # One tree pass over 8 candidate nodes on top of a 5-token prefix, then your compaction of
    # an accepted path: the cache must hold exactly what a plain forward over prefix + path
    # writes, and the next token's logits must match. float64, so any mix-up shows.
    args = ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=40, hidden_dim=32, max_seq_len=64)
    model = Transformer(args).init_weights(seed=6).double().eval()
    g = torch.Generator().manual_seed(6)
    prefix = torch.randint(0, 40, (1, 5), generator=g)
    parents = [-1, 0, 0, 1, 1, 2, 3, 5]
    tokens = torch.randint(0, 40, (1, len(parents)), generator=g)
    depth = torch.tensor([len(ancestors(parents, n)) for n in range(len(parents))])
    what = f"a tree pass (parents {parents}), then compact_cache(keep={path})"
    with torch.no_grad():
        cache = model.new_cache(max_len=32)
        model(prefix, cache=cache)
        cache.commit()
        m = cache.length
        mask = torch.cat([torch.ones(len(parents), m, dtype=torch.bool), bool_mask(tree_rows(parents))], 1)
        model(tokens, pos=m + depth, mask=mask, cache=cache)  # node j's entries are pending at slot m + j
        n = call("compact_cache", cache.k, cache.v, m, list(path))
        if int(n) != m + len(path):
            pytest.fail(f"{what}: should return the new length {m + len(path)}; got {n}", pytrace=False)
        cache.length, cache.pending = int(n), 0

        seq = torch.cat([prefix, tokens[:, path]], 1)  # what the model has really read
        plain = model.new_cache(max_len=32)
        model(seq, cache=plain)
        for name, got, want in [("k_cache", cache.k, plain.k), ("v_cache", cache.v, plain.v)]:
            for s in range(int(n)):
                if not torch.allclose(got[:, :, :, s], want[:, :, :, s], rtol=1e-9, atol=1e-9):
                    pytest.fail(f"{what}: slot {s} of {name} differs from a plain forward over the prefix "
                                f"and the kept tokens", pytrace=False)
        nxt = torch.tensor([[7]])
        if not torch.allclose(model(nxt, cache=cache)[0, -1], model(torch.cat([seq, nxt], 1))[0, -1],
                              rtol=1e-9, atol=1e-9):
            pytest.fail(f"{what}: the next token's logits differ from a plain forward", pytrace=False)
