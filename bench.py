"""Every decoding method side by side on held-out prompts, and transformers as the peer.

    python bench.py                 # the README table and plots (about 4 min for the shipped model)
    python bench.py --checkpoint checkpoints/smollm2 --ar-also bfloat16:2   # SmolLM2 on chat prompts
    python bench.py --quick         # 2 prompts, 1 round: a smoke run

For each method and tree: tau (tokens per decoding step), tokens per second and the
speedup over our own plain decoding measured in the same run, methods interleaved
prompt by prompt so that machine drift hits all of them alike. Every lossless method
must reproduce plain greedy decoding token for token; the table says whether it did.
Peak memory is the resident set size of a separate process running that method alone (one
thread: two such processes run at a time).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

import model as model_lib
from decode import SelfSpec, Sampler, generate_ar, generate_tree, parse_skip, tree_planner
from model import DTYPES, Tokenizer, Transformer, meta_to_hf_rope
from transfer import load_drafter, restrict_vocab

TREES = ["chain", "small", "medium", "wide", "dynamic-12"]
CHAT_PROMPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "chat_prompts.json")


def held_out_prompts(data_dir, tok, n, n_tokens=48):
    """n prompts from the held-out works: the start of speeches spread evenly over val.txt."""
    path = os.path.join(data_dir, "val.txt")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} not found: run `python data/prepare.py` first, or pass a chat "
                         f"prompt file with --prompt-file")
    speeches = [s for s in open(path).read().split("\n\n") if len(s) > 200 and not s.startswith("[")]
    picks = [speeches[i * len(speeches) // n] for i in range(n)]
    return [tok.encode(tok.decode(tok.encode(s, bos=False)[:n_tokens])) for s in picks]


def chat_prompts(file, tok, n=None):
    """The first n prompts of a chat prompt file (data/chat_prompts.json), each a user turn
    rendered with the model's chat template; the kinds take turns, so any n is varied."""
    if not tok.chat_template:
        raise SystemExit(f"error: {file} holds chat prompts, and this model has no chat template: "
                         f"bench it on held-out text (no --prompt-file), or pick a chat model")
    with open(file) as f:
        prompts = json.load(f)["prompts"]
    kinds = {}
    for p in prompts:
        kinds.setdefault(p["kind"], []).append(p["text"])
    turns = [texts[i] for i in range(max(map(len, kinds.values()))) for texts in kinds.values() if i < len(texts)]
    return [tok.apply_chat_template([{"role": "user", "content": t}]) for t in turns[:n]]


def bench_prompts(a, tok):
    """Chat prompts for a model with a chat template, held-out Shakespeare for ours."""
    if a.prompt_file or tok.chat_template:
        return chat_prompts(a.prompt_file or CHAT_PROMPTS, tok, a.prompts)
    return held_out_prompts(a.data, tok, a.prompts or 8)


def to_transformers(model):
    """The same weights as a transformers LlamaForCausalLM (the peer), HF's RoPE layout."""
    from transformers import LlamaConfig, LlamaForCausalLM
    a = model.args
    rope = {"rope_type": "default", "rope_theta": a.rope_theta} if a.rope_scaling is None else \
        {"rope_type": "llama3", "rope_theta": a.rope_theta, **a.rope_scaling}
    cfg = LlamaConfig(hidden_size=a.dim, intermediate_size=a.hidden_dim, num_hidden_layers=a.n_layers,
                      num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads, vocab_size=a.vocab_size,
                      rms_norm_eps=a.norm_eps, rope_theta=a.rope_theta, rope_scaling=rope, rope_parameters=rope,
                      max_position_embeddings=a.max_seq_len, tie_word_embeddings=a.tie_embeddings,
                      head_dim=a.head_dim)
    hf = LlamaForCausalLM(cfg)
    table = model.output.weight if model.tok_embeddings is None else model.tok_embeddings.weight  # tied + blocked: one table
    sd = {"model.embed_tokens.weight": table, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.output.weight}
    for i, b in enumerate(model.layers):
        p = f"model.layers.{i}."
        sd |= {p + "self_attn.q_proj.weight": meta_to_hf_rope(b.attention.wq.weight, a.n_heads),
               p + "self_attn.k_proj.weight": meta_to_hf_rope(b.attention.wk.weight, a.n_kv_heads),
               p + "self_attn.v_proj.weight": b.attention.wv.weight, p + "self_attn.o_proj.weight": b.attention.wo.weight,
               p + "mlp.gate_proj.weight": b.feed_forward.w1.weight, p + "mlp.down_proj.weight": b.feed_forward.w2.weight,
               p + "mlp.up_proj.weight": b.feed_forward.w3.weight, p + "input_layernorm.weight": b.attention_norm.weight,
               p + "post_attention_layernorm.weight": b.ffn_norm.weight}
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    return hf.to(model.dtype).eval()  # the peer computes in our dtype


def vocab_drafter(path, model, family, n):
    """The drafter in `path` drafting from the n tokens its training text used most (0: all), or None,
    said on stderr, where it cannot (a file without token counts, Medusa heads with LM heads of their own)."""
    drafter = load_drafter(path, model, family)
    try:
        return restrict_vocab(drafter, model, n)
    except ValueError as e:
        print(f"[{path}: no draft vocabulary of {n} tokens, so no rows for it: {e}]", file=sys.stderr)
        return None


def methods(a, model, tok, families=("ar", "hidden-transfer", "medusa", "self-spec", "transformers")):
    """name -> (family, tree spec or None, function(prompt_ids, max_new_tokens) -> (ids, stats))."""
    eos = tok.eos_ids
    greedy = Sampler()
    out = {"ar": ("ar", None, lambda p, n: generate_ar(model, p, n, greedy, eos))}
    drafters = {"hidden-transfer": "hidden_transfer.safetensors", "medusa": "medusa.safetensors"}
    for family, file in drafters.items():
        path = os.path.join(a.checkpoint, file)
        if family not in families:
            continue
        if not os.path.exists(path):
            print(f"[no {path}: skipping {family}]", file=sys.stderr)
            continue
        for v in a.draft_vocab:  # a drafter per draft vocabulary (restrict_vocab changes the drafter)
            d, vocab = vocab_drafter(path, model, family, v), f" vocab {v}" if v else ""
            if d is None:
                continue
            for tree in a.trees:
                out[f"{family} {tree}{vocab}"] = (family, tree, lambda p, n, d=d, t=tree: generate_tree(
                    model, d, p, n, greedy, t, eos))
                for s in a.spawn if family == "hidden-transfer" else []:  # pseudo tokens on the first s nodes only
                    out[f"{family} {tree} spawn {s}{vocab}"] = (family, tree, lambda p, n, d=d, t=tree, s=s: (
                        generate_tree(model, d, p, n, greedy, t, eos, spawn=s)))
    ss = SelfSpec(parse_skip(a.skip, model.args.n_layers), a.self_spec_k)
    if "self-spec" in families:
        out[f"self-spec skip {','.join(map(str, ss.skip))} k={ss.k}"] = ("self-spec", "chain", lambda p, n: (
            generate_tree(model, ss, p, n, greedy, "chain", eos)))
    if "transformers" not in families:
        return out
    try:
        hf = to_transformers(model)
    except ImportError:
        print("[transformers not installed: no peer rows]", file=sys.stderr)
        return out

    def hf_generate(p, n, **kw):
        with torch.inference_mode():
            x = torch.tensor([p])
            y = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                            eos_token_id=sorted(eos), pad_token_id=sorted(eos)[0], **kw)
        return y[0, len(p):].tolist(), {"steps": None}
    out["transformers generate"] = ("transformers", None, hf_generate)
    if a.prompt_lookup or (a.prompt_lookup is None and not (a.prompt_file or tok.chat_template)):
        # transformers' own drafting (n-grams of the prompt): by default on held-out text only
        out["transformers prompt lookup"] = ("transformers", None,
                                             lambda p, n: hf_generate(p, n, prompt_lookup_num_tokens=10))
    return out


def skip_candidates(L):
    """Self-spec skip sets to try: contiguous runs of inner blocks (the first and last blocks
    are always kept) of a few lengths, 1/8 to 1/2 of the model, from a few start blocks each.
    About 20 sets at any depth; every run of a 30-block model would be 406 (two hours)."""
    sets = set()
    for n in {max(1, L // 8), max(1, L // 4), max(1, 3 * L // 8), max(1, L // 2)}:
        for lo in {1 + round(i * (L - 2 - n) / 4) for i in range(5)}:  # 5 starts, first to last
            sets.add(tuple(range(lo, lo + n)))
    return sorted(sets)


def search_skip(model, tok, prompts, k, max_new_tokens):
    """Self-spec's skipped blocks: the fastest of skip_candidates on a few prompts."""
    rows = []
    candidates = skip_candidates(model.args.n_layers)
    print(f"\nself-spec skip search (k={k}, {len(prompts)} prompts, {len(candidates)} sets): "
          f"skipped blocks, tau, tokens/s", file=sys.stderr)
    for skip in candidates:
        ss = SelfSpec(skip, k)
        t0, n, steps = time.perf_counter(), 0, 0
        for p in prompts:
            ids, st = generate_tree(model, ss, p, max_new_tokens, Sampler(), "chain", tok.eos_ids)
            n, steps = n + len(ids), steps + st["steps"]
        name = f"{skip[0]}-{skip[-1]}" if len(skip) > 1 else str(skip[0])
        rows.append((name, (n - len(prompts)) / max(steps, 1), n / (time.perf_counter() - t0)))
        print(f"  {rows[-1][0]:>5}  {rows[-1][1]:.2f}  {rows[-1][2]:.1f}", file=sys.stderr)
    return max(rows, key=lambda r: r[2])[0]


def run(a):
    torch.manual_seed(0)
    model = Transformer.from_pretrained(a.checkpoint, dtype=DTYPES[a.dtype])
    tok = Tokenizer(a.checkpoint)
    prompts = bench_prompts(a, tok)
    if a.skip == "search":
        a.skip = search_skip(model, tok, prompts[:2], a.self_spec_k, 64)
    table = methods(a, model, tok)
    setting = {name: (a.dtype, a.threads) for name in table}
    # plain decoding in other dtypes and thread counts: the speedups are over the fastest of them
    for spec in a.ar_also:
        dtype, threads = spec.split(":")
        other = Transformer.from_pretrained(a.checkpoint, dtype=DTYPES[dtype])
        name = f"ar {dtype} {threads} threads"
        table[name] = ("ar", None, lambda p, n, m=other: generate_ar(m, p, n, Sampler(), tok.eos_ids))
        setting[name] = (dtype, int(threads))
    stats = {name: {"seconds": 0.0, "tokens": 0, "steps": 0, "same": True} for name in table}
    answers = [None] * len(prompts)  # plain decoding's output for each prompt, in --dtype

    def call(name, p, n=a.max_new_tokens):
        torch.set_num_threads(setting[name][1])
        try:
            return table[name][2](p, n)
        finally:
            torch.set_num_threads(a.threads)

    for name in table:  # warm up every code path once (a few tokens are enough: the first call's costs)
        call(name, prompts[0][:8], 8)
    for r in range(a.rounds):
        for i, p in enumerate(prompts):
            names = list(table)
            names = names[(i + r) % len(names):] + names[:(i + r) % len(names)]  # rotate the order
            refs = {}  # plain decoding's output in each dtype: what a method in that dtype must reproduce
            for name in sorted(names, key=lambda n: table[n][0] != "ar"):
                t0 = time.perf_counter()
                ids, st = call(name, p)
                dt = time.perf_counter() - t0
                s = stats[name]
                s["seconds"] += dt
                s["tokens"] += len(ids)
                s["steps"] += (st["steps"] or 0)
                s["same"] &= ids == refs.setdefault(setting[name][0], ids)
            answers[i] = refs[a.dtype]  # the "ar" row decodes in --dtype, first
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    best_ar = max(stats[n]["tokens"] / stats[n]["seconds"] for n in table if table[n][0] == "ar")
    rows = []
    for name, (family, tree, _) in table.items():
        s = stats[name]
        speed = s["tokens"] / s["seconds"]
        n_steps = s["steps"]
        tau = (s["tokens"] - a.rounds * len(prompts)) / n_steps if n_steps else None  # prefill token excluded
        rows.append({"method": name, "family": family, "tree": tree, "dtype": setting[name][0],
                     "threads": setting[name][1], "tau": tau, "tokens_per_second": speed,
                     "speedup": speed / best_ar, "identical": s["same"]})
    return model, rows, prompts, answers


def memory_probe(a, name, family):
    """Peak resident memory (MB) while one method generates, in a fresh process that has
    loaded only what that method needs (Linux: VmHWM after resetting it; else None)."""
    argv = sys.argv[1:] + (["--skip", a.skip] if a.skip else [])  # the searched skip set, not a second search
    code = f"import sys; sys.argv=['bench.py'] + {json.dumps(argv)}; import bench; bench.probe({name!r}, {family!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    try:
        return int(out.stdout.split()[-1]) / 1024  # kB -> MB
    except (IndexError, ValueError):
        return None


def _peak_rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


def probe(name, family):
    a = parse_args(sys.argv[1:])
    torch.set_num_threads(1)  # two probes share the cores (main): threads that wait on each other would crawl
    model = Transformer.from_pretrained(a.checkpoint, dtype=DTYPES[a.dtype])
    tok = Tokenizer(a.checkpoint)
    fn = methods(a, model, tok, families=(family,))[name][2]
    prompt = bench_prompts(a, tok)[0]
    if not os.path.exists("/proc/self/clear_refs"):
        return
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak: loading and imports peak higher than generation itself
    fn(prompt, a.max_new_tokens)
    print(_peak_rss_kb())


@torch.inference_mode()
def forward_times(model, sizes, prefix=128, repeats=20, runs=5):
    """Seconds per forward pass of T new tokens on a cache of `prefix` tokens: the fastest
    of `runs` runs of `repeats` passes (the least disturbed by whatever else shares the CPU)."""
    cache = model.new_cache(max_len=prefix + max(sizes))
    model(torch.randint(0, model.args.vocab_size, (1, prefix)), cache=cache)
    cache.commit()
    out = {}
    for T in sizes:
        x = torch.randint(0, model.args.vocab_size, (1, T))
        model(x, cache=cache)
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x, cache=cache)  # pending entries are overwritten each time: the cache stays at `prefix`
            best = min(best, (time.perf_counter() - t0) / repeats)
        out[T] = best
    return out


def matmul_flops(dtype, n=1024, repeats=5):
    """The CPU's best FLOP/s on a large square matmul in `dtype`: the compute roof."""
    x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x @ y
    t0 = time.perf_counter()
    for _ in range(repeats):
        x @ y
    return repeats * 2 * n**3 / (time.perf_counter() - t0)


def pass_cost_table(model, fwd, flops):
    """An n-token pass over a 1-token pass, measured, next to what the hardware allows: a pass
    reads every weight once whatever n is (the 1-token pass sets that time), and needs
    2 x parameters FLOPs per token (the matmul roof sets that time); the larger one binds."""
    params = sum(p.numel() for p in model.parameters())  # a tied embedding counted once
    t1 = fwd[1]
    lines = [f"pass cost by tokens in the pass (cache of 128; {params / 1e6:.0f}M parameters, "
             f"{params * model.dtype.itemsize / 1e6:.0f} MB of weights read per pass, "
             f"{flops / 1e9:.0f} GFLOP/s on a 1024x1024 matmul):", "",
             "| tokens n | ms | n-token pass / 1-token pass | bound: max(weights, FLOPs) / 1-token pass |",
             "|---|---|---|---|"]
    for n, s in fwd.items():
        lines.append(f"| {n} | {s * 1e3:.1f} | {s / t1:.2f} | {max(t1, n * 2 * params / flops) / t1:.2f} |")
    return lines


def plots(a, rows, fwd, acc, fwd_row=None, acc_held_out=None, fwd_torch=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from tree import build_tree, parse_tree
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.2))
    vocab = lambda r: r["method"].partition(" vocab ")[2]  # "" for drafts from every token
    spawn = lambda r: r["method"].partition(" spawn ")[2].split(" ")[0]  # "" for pseudo tokens on every node
    for family, v in sorted({(r["family"], vocab(r)) for r in rows if r["family"] in ("hidden-transfer", "medusa")}):
        ours = [r for r in rows if r["family"] == family and vocab(r) == v and not r["tree"].startswith("dynamic")]
        name = family + (f", vocab {v}" if v else "")
        pts = [(r["tree"], r["speedup"], r["tau"]) for r in ours if " spawn " not in r["method"]]
        if pts:
            sizes = [build_tree(parse_tree(t, 4)).n_nodes for t, _, _ in pts]
            ax[0].plot(sizes, [s for _, s, _ in pts], marker="o", label=f"{name} speedup")
            ax[0].plot(sizes, [t for _, _, t in pts], marker="x", ls="--", label=f"{name} tau")
        for r in rows:  # dynamic-N trees: N candidates + the root, their speedups as stars
            if r["family"] == family and vocab(r) == v and r["tree"].startswith("dynamic"):
                ax[0].scatter([int(r["tree"].split("-")[1]) + 1], [r["speedup"]], marker="*", s=90,
                              label=f"{name} speedup, {r['tree']}" + (f" spawn {spawn(r)}" if spawn(r) else ""))
        spawned = [r for r in ours if " spawn " in r["method"]]
        if spawned:  # pseudo tokens on the first n nodes only: points, not a line
            ax[0].scatter([build_tree(parse_tree(r["tree"], 4)).n_nodes for r in spawned], [r["speedup"] for r in spawned],
                          marker="s", label=f"{name} speedup, spawn {spawn(spawned[0])}")
    ax[0].axhline(1, color="grey", lw=0.8)
    ax[0].set(xlabel="tree nodes", title="speedup and tau vs tree size (CPU)")
    ax[0].legend(fontsize=8)
    for family, v in acc.items():
        line, = ax[1].plot(range(1, len(v) + 1), v, marker="o", label=f"{family}, the bench's answers")
        if acc_held_out and family in acc_held_out:
            v = acc_held_out[family]
            ax[1].plot(range(1, len(v) + 1), v, marker="x", ls="--", color=line.get_color(),
                       label=f"{family}, held-out training-kind text")
    ax[1].set(xlabel="future position i", ylabel="top-1 accuracy", title="draft accuracy")
    ax[1].legend()
    Ts = sorted(fwd)
    kernel = " + blocked_matmul.c" if fwd_torch else ""
    ax[2].plot(Ts, [fwd[T] * 1e3 for T in Ts], marker="o", label=f"blocked weights (BlockedLinear){kernel}")
    if fwd_torch:
        ax[2].plot(sorted(fwd_torch), [fwd_torch[T] * 1e3 for T in sorted(fwd_torch)], marker="s", ls=":",
                   label="blocked weights, torch.matmul")
    if fwd_row:
        ax[2].plot(sorted(fwd_row), [fwd_row[T] * 1e3 for T in sorted(fwd_row)], marker="x", ls="--",
                   label="nn.Linear, row-major (as on disk)")
    ax[2].legend(fontsize=8)
    ax[2].set(xscale="log", xlabel="tokens in one forward pass", ylabel="ms per pass",
              title="forward time vs tokens per pass")
    fig.tight_layout()
    path = os.path.join(a.out, "bench.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def split_specs(text):
    """Comma-separated tree specs, where a JSON list keeps its own commas: "chain,[[0],[0,0]]"."""
    specs, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            specs.append(text[start:i])
            start = i + 1
    specs.append(text[start:])  # the last spec, or an unclosed one, which parse_tree then names
    return [s.strip() for s in specs if s.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/shakespeare")
    p.add_argument("--data", default="data/shakespeare")
    p.add_argument("--accuracy-data", default=None,
                   help="folder whose val.bin the drafters' per-position accuracy is measured on (default: "
                        "data/<checkpoint>-chat for a chat model, else data/shakespeare-greedy)")
    p.add_argument("--prompts", type=int, default=None,
                   help="how many prompts (default: 8 held-out speeches, or every prompt of the chat prompt file)")
    p.add_argument("--prompt-file", default=None,
                   help="chat prompts (JSON like data/chat_prompts.json); the default for a model with a chat template")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--trees", default=",".join(TREES),
                   help="comma-separated tree specs: presets, dynamic-N, JSON rank paths like [[0],[0,0]]")
    p.add_argument("--skip", default="search", help="self-spec skipped blocks, or 'search' for the fastest")
    p.add_argument("--self-spec-k", type=int, default=3)
    p.add_argument("--spawn", default="", help="comma-separated N: hidden transfer also with pseudo tokens "
                                                "on the first N nodes of each tree only")
    p.add_argument("--draft-vocab", default="0",
                   help="comma-separated N: the drafters draft from the N tokens their training text used most "
                        "(0: every token; rows for each N; the accuracy lines use the first)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-method memory probes")
    p.add_argument("--prompt-lookup", action=argparse.BooleanOptionalAction, default=None,
                   help="also transformers generate with prompt lookup decoding (default: on held-out text, "
                        "not on chat prompts, where it ran at 0.87-0.90x plain generate on SmolLM2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2 prompts, 1 round, 32 tokens, the small tree, no skip search, "
                        "no memory probes, no accuracy, two forward sizes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, for every method and the peer")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="every method and the peer compute in it (bfloat16 halves the bytes each token reads)")
    p.add_argument("--ar-also", default="",
                   help="plain decoding in other settings too, DTYPE:THREADS comma-separated (e.g. "
                        "bfloat16:2,float32:2): every speedup is then over the fastest plain decoding")
    p.add_argument("--out", default="runs/bench")
    a = p.parse_args(argv)
    a.trees = split_specs(a.trees)
    for spec in a.trees:
        try:
            tree_planner(spec, 8)  # the drafter's k clips it later; here only the spec's form is checked
        except ValueError as e:
            p.error(f"--trees: {e}")
    a.ar_also = [s for s in a.ar_also.split(",") if s]
    if not all(n.strip().isdigit() and int(n) >= 1 for n in a.spawn.split(",") if n):
        p.error(f"--spawn {a.spawn!r}: write node counts >= 1, comma-separated, e.g. 1,4")
    a.spawn = [int(n) for n in a.spawn.split(",") if n]
    if not all(n.strip().isdigit() for n in a.draft_vocab.split(",")):
        p.error(f"--draft-vocab {a.draft_vocab!r}: write token counts >= 0, comma-separated, e.g. 0,8192")
    a.draft_vocab = [int(n) for n in a.draft_vocab.split(",")]
    for s in a.ar_also:
        dtype, _, threads = s.partition(":")
        if dtype not in DTYPES or not threads.isdigit() or int(threads) < 1:
            p.error(f"--ar-also {s!r}: write DTYPE:THREADS, DTYPE one of {sorted(DTYPES)}, e.g. bfloat16:2")
    if a.quick:
        a.prompts, a.rounds, a.no_memory, a.max_new_tokens, a.trees = 2, 1, True, 32, ["small"]
        a.skip = None if a.skip == "search" else a.skip
    return a


def main():
    a = parse_args(sys.argv[1:])
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    # A 7.7M-parameter model runs faster on one thread than on two here: its matmuls are
    # too small to split, and waking a second thread costs more than it saves.
    torch.set_num_threads(a.threads)
    model, rows, prompts, answers = run(a)
    phase = lambda what: print(f"[{what} done at {time.time() - t0:.0f} s]", file=sys.stderr)
    phase("timed generation")
    if not a.no_memory:  # two probes at a time: each is its own process, and nothing is timed now
        with ThreadPoolExecutor(2) as pool:
            peaks = pool.map(lambda r: memory_probe(a, r["method"], r["family"]), rows)
        for r, peak in zip(rows, peaks):
            r["peak_rss_mb"] = peak
        phase("memory probes")
    # the best of 3 runs of 5 passes each: steady on a quiet machine for passes of milliseconds
    fwd = forward_times(model, [1, 16] if a.quick else [1, 2, 4, 8, 16, 24, 32, 48, 64, 128], repeats=5, runs=3)
    # the same passes with nn.Linear and the row-major weights of the file (what
    # model.block_linears_ changes on a CPU), to show what that layout is worth
    plain = Transformer.from_pretrained(a.checkpoint, dtype=DTYPES[a.dtype], blocked=False)
    fwd_row = forward_times(plain, [1] if a.quick else [1, 4, 16, 64], repeats=5, runs=3)
    del plain
    # and blocked, with torch.matmul doing every product instead of blocked_matmul.c, to show what the kernel is worth
    fwd_torch = {}
    if model_lib.native_kernel() is not None and model_lib.USE_NATIVE_KERNEL:
        model_lib.USE_NATIVE_KERNEL = False
        try:
            fwd_torch = forward_times(model, [1] if a.quick else [1, 4, 8, 16, 64], repeats=5, runs=3)
        finally:
            model_lib.USE_NATIVE_KERNEL = True
    phase("pass costs")
    from analyze import held_out_batches, position_accuracy
    # (1) on what this run's decoding drafted: each prompt and plain decoding's answer to it, scored
    # from the prompt's last token on (its pass drafts the answer's 2nd..(k+1)th tokens)
    texts = [] if a.quick else [torch.tensor([p + ans]) for p, ans in zip(prompts, answers)]
    starts = [len(p) - 1 for p in prompts]
    # (2) on held-out text of the training kind: the model's own greedy continuations of held-out
    # prompts (train.py chat-data / greedy-data), or the held-out works themselves if that is missing
    if a.accuracy_data is None:  # the model's own text: chat-data for a chat model, greedy-data for ours
        name = os.path.basename(os.path.normpath(a.checkpoint if os.path.isdir(a.checkpoint) else os.path.dirname(a.checkpoint)))
        a.accuracy_data = f"data/{name}-chat" if Tokenizer(a.checkpoint).chat_template else "data/shakespeare-greedy"
    acc_data = a.accuracy_data if os.path.exists(os.path.join(a.accuracy_data, "val.bin")) else a.data
    # batches small enough that the drafts' logits, (B, T, k, V) floats, stay near 256 MB
    batch = max(1, min(8, 2**26 // (256 * 4 * model.args.vocab_size)))
    batches = [] if a.quick else held_out_batches(acc_data, 16 // batch, batch, 256)  # 16 x 256 positions
    acc, acc_held_out = {}, {}
    for family, file in [("hidden-transfer", "hidden_transfer.safetensors"), ("medusa", "medusa.safetensors")]:
        path = os.path.join(a.checkpoint, file)
        drafter = vocab_drafter(path, model, family, a.draft_vocab[0]) if os.path.exists(path) and batches else None
        if drafter is not None:
            acc[family] = position_accuracy(model, drafter, texts, topk=(1,), starts=starts)[1]
            acc_held_out[family] = position_accuracy(model, drafter, batches, topk=(1,))[1]
    phase("accuracy")

    fmt = lambda v, f: "-" if v is None else format(v, f)
    kind = "chat" if a.prompt_file or Tokenizer(a.checkpoint).chat_template else "held-out"
    lines = [f"{len(prompts)} {kind} prompts x {a.rounds} rounds, {a.max_new_tokens} new tokens each, greedy, "
             f"{a.threads} CPU threads, {a.dtype} (unless the row says otherwise)",
             "", "| method | tau | tokens/s | speedup vs our fastest AR | same tokens as AR in its dtype | "
                 "peak RSS MB while generating |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt(r['tau'], '.2f')} | {r['tokens_per_second']:.1f} | "
                     f"{r['speedup']:.2f}x | {'yes' if r['identical'] else 'NO'} | {fmt(r.get('peak_rss_mb'), '.0f')} |")
    lines += [""] + pass_cost_table(model, fwd, matmul_flops(DTYPES[a.dtype])) + [
              "", "the same passes with nn.Linear's row-major weights (as on disk, not blocked): " +
              ", ".join(f"{T}: {s * 1e3:.2f} ms" for T, s in fwd_row.items())]
    if fwd_torch:
        lines.append("and blocked, with torch.matmul instead of the C kernel (blocked_matmul.c): " +
                     ", ".join(f"{T}: {s * 1e3:.2f} ms" for T, s in fwd_torch.items()))
    n_answers = sum(x.shape[1] - j for x, j in zip(texts, starts))
    for family in acc:
        vocab = f", drafting from its {a.draft_vocab[0]} most frequent tokens" if a.draft_vocab[0] else ""
        lines.append(f"{family} top-1 accuracy by future position{vocab}, on this run's answers ({n_answers} drafting "
                     f"positions): " + " ".join(f"{x:.3f}" for x in acc[family]) + f"; on {sum(b.numel() for b in batches)}"
                     f" tokens of {acc_data}/val.bin: " + " ".join(f"{x:.3f}" for x in acc_held_out[family]))
    lines.append(f"\nbench.py ran in {time.time() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump({"rows": rows, "forward_seconds": fwd, "forward_seconds_not_blocked": fwd_row,
                   "forward_seconds_blocked_torch_matmul": fwd_torch, "accuracy": acc,
                   "accuracy_held_out": acc_held_out}, f, indent=1)
    plots(a, rows, fwd, acc, fwd_row, acc_held_out, fwd_torch)


if __name__ == "__main__":
    main()
