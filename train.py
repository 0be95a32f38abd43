"""Pretrain the tiny Llama, evaluate it, and train drafters on a frozen base.

    python train.py pretrain --out checkpoints/shakespeare      # the shipped model
    python train.py eval --checkpoint checkpoints/shakespeare    # held-out loss and perplexity
    python train.py drafter                                      # hidden-transfer drafter for it
    python train.py drafter --kind medusa                        # Medusa heads, the baseline
    python train.py greedy-data                                  # the model's own greedy text...
    python train.py drafter --data data/shakespeare-greedy       # ...to train drafters on
    python train.py count-tokens --drafter F --data D            # the counts --draft-vocab picks from

Checkpoints are written atomically (temporary file, then rename) and `--resume`
continues exactly where a run stopped: model, optimizer, schedule, data position.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import DTYPES, ModelArgs, Tokenizer, Transformer, atomic_write, atomic_write_text, pick_device


def token_dtype(vocab_size):
    # uint16 holds 65,536 ids; Llama 3's 128,256 need uint32
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def write_tokens(folder, splits, tok, made_by):
    """Write folder/{split}.bin for each {split: ids} and folder/meta.json, which records the
    id type and which tokenizer made the ids (checked by load_tokens). Atomic per file."""
    os.makedirs(folder, exist_ok=True)
    dtype = token_dtype(tok.vocab_size)
    for split, ids in splits.items():
        atomic_write(os.path.join(folder, f"{split}.bin"), lambda f: np.asarray(ids, dtype=dtype).tofile(f))
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": tok.vocab_size, "tokenizer": tok.fingerprint(),
            "made_by": made_by}
    atomic_write_text(os.path.join(folder, "meta.json"), json.dumps(meta, indent=1) + "\n")


def load_tokens(file, tok=None):
    """Token ids of a .bin file (memory-mapped). With tok, refuse ids another tokenizer made."""
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file} not found: run `python data/prepare.py` for the Shakespeare corpus, "
                                f"or make data for your model with `python train.py chat-data` / `tokenize`")
    meta_file = os.path.join(os.path.dirname(file), "meta.json")
    meta = json.load(open(meta_file)) if os.path.exists(meta_file) else {"dtype": "uint16"}  # older folders
    if tok is not None and meta.get("tokenizer", tok.fingerprint()) != tok.fingerprint():
        raise ValueError(f"{file} holds token ids of another tokenizer ({meta.get('made_by', '?')}), not this "
                         f"model's: make data for this model with `python train.py chat-data --checkpoint ...` "
                         f"or `python train.py tokenize --checkpoint ... --text FILE`")
    data = np.memmap(file, dtype=meta["dtype"], mode="r")
    if tok is not None and len(data) and int(data.max()) >= tok.vocab_size:
        raise ValueError(f"{file} holds id {int(data.max())}, beyond this model's vocabulary of {tok.vocab_size}: "
                         f"it was made for another model")
    return data


def get_batch(data, batch_size, seq_len, seed, step, scored=None):
    # The batch is a pure function of (seed, step): resuming at step s sees exactly
    # the data an uninterrupted run would have seen, with no sampler state to save.
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=g).tolist()
    chunk = torch.stack([torch.from_numpy(data[s:s + seq_len + 1].astype(np.int64)) for s in starts])
    if scored is None:
        return chunk[:, :-1], chunk[:, 1:]  # inputs, targets: (B, T) each
    # scored (len(data),) bool: which targets count, i.e. whether each window's next token does
    return chunk[:, :-1], chunk[:, 1:], torch.stack([torch.from_numpy(scored[s + 1:s + seq_len + 1]) for s in starts])


def answer_tokens(ids, tok):
    """(len(ids),) bool: True at the tokens of the model's own turns in chats written with tok's
    chat template (train.py chat-data's), from the first token after the assistant header
    through the end-of-turn token; False at system prompts and user turns. Greedy decoding
    writes (and a drafter drafts) only the former."""
    if not getattr(tok, "chat_template", None):
        raise ValueError("--draft-on answers finds the model's answers by its chat template, and this model has "
                         "none: use --draft-on all")
    user = [{"role": "user", "content": "x"}]
    with_header = tok.apply_chat_template(user)
    without = tok.apply_chat_template(user, add_generation_prompt=False)
    header = with_header[len(without):]  # e.g. <|im_start|>assistant\n
    if not header or with_header[:len(without)] != without:
        raise ValueError("this model's chat template writes no assistant header to find its answers by")
    ids = np.asarray(ids)
    # where the header ends: every position p with ids[p - len(header) + 1 : p + 1] == header
    ends = np.ones(len(ids) - len(header) + 1, dtype=bool)
    for i, h in enumerate(header):
        ends &= ids[i:len(ids) - len(header) + 1 + i] == h
    out = np.zeros(len(ids), dtype=bool)
    stops = set(tok.eos_ids)
    for p in np.flatnonzero(ends) + len(header):   # the first token of an answer
        while p < len(ids) and ids[p] != header[0]:  # an answer cut at --answer-len runs into the next chat
            out[p] = True
            if ids[p] in stops:
                break
            p += 1
    return out


def spawn_positions(a, step):
    """The positions that draft in step `step` (None: all): a pure function of (seed, step), like
    the batch. Both drafter kinds take the same ones, so they see the same training signal."""
    if a.spawn is None or a.spawn >= a.seq_len:
        return None
    g = torch.Generator().manual_seed(a.seed * 7_919 + step)
    return torch.randperm(a.seq_len - 1, generator=g)[:a.spawn].sort().values  # the last position has no target


def lr_at(step, a):
    """Linear warmup, then cosine decay to min_lr."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    progress = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (a.lr - a.min_lr)


def check_same_run(saved, a):
    """--resume must continue the same run: the schedule and the data depend on every setting."""
    diff = {k: (saved.get(k), v) for k, v in vars(a).items() if k != "resume" and saved.get(k) != v}
    if diff:
        raise ValueError(f"--resume with other settings than the saved run, {{name: (saved, now)}}: {diff}")


def resume(state_file, a, device, module, key, opt):
    """--resume: restore module, optimizer and RNG from the same run's state file; return it."""
    if not os.path.exists(state_file):
        raise FileNotFoundError(f"--resume: no {state_file} to resume from")
    st = torch.load(state_file, map_location=device, weights_only=True)
    check_same_run(st["config"], a)
    module.load_state_dict(st[key])
    opt.load_state_dict(st["optimizer"])
    torch.set_rng_state(st["rng"])
    return st


def atomic_torch_save(obj, file):
    atomic_write(file, lambda f: torch.save(obj, f))


@torch.no_grad()
def evaluate(model, data, seq_len, batch_size, device, max_batches=None):
    """Mean cross-entropy (nats/token) over consecutive non-overlapping windows of data."""
    model.eval()
    n_windows = (len(data) - 1) // seq_len
    starts = list(range(0, n_windows * seq_len, seq_len))
    if max_batches is not None:
        starts = starts[:max_batches * batch_size]
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        chunk = torch.stack([torch.from_numpy(data[s:s + seq_len + 1].astype(np.int64)) for s in starts[i:i + batch_size]])
        x, y = chunk[:, :-1].to(device), chunk[:, 1:].to(device)
        logits = model(x)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


# ----------------------------------------------------------------------------- pretraining

def pretrain(a):
    torch.manual_seed(a.seed)
    device = pick_device(a.device)
    train_data = load_tokens(os.path.join(a.data, "train.bin"))
    val_data = load_tokens(os.path.join(a.data, "val.bin"))
    tok = Tokenizer(os.path.dirname(a.tokenizer))
    os.makedirs(a.out, exist_ok=True)
    state_file = os.path.join(a.out, "train_state.pt")

    margs = ModelArgs(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads,
                      vocab_size=tok.vocab_size, hidden_dim=a.hidden_dim, max_seq_len=a.max_seq_len,
                      tie_embeddings=a.tie_embeddings)
    model = Transformer(margs).init_weights(a.seed).to(device)
    # no weight decay on norms (1-d parameters), as in nanoGPT
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    step, best_val, history = 0, float("inf"), []
    if a.resume:
        st = resume(state_file, a, device, model, "model", opt)
        step, best_val, history = st["step"], st["best_val"], st["history"]
        print(f"resumed from {state_file} at step {step}")
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {margs}")

    def save():
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                           "best_val": best_val, "history": history, "rng": torch.get_rng_state(),
                           "config": vars(a)}, state_file)
        model.save_pretrained(a.out, dtype=torch.bfloat16)  # 2 bytes a weight on disk, computed in float32
        if not os.path.samefile(os.path.dirname(os.path.abspath(a.tokenizer)), a.out):
            shutil.copyfile(a.tokenizer, os.path.join(a.out, "tokenizer.model"))
        atomic_write_text(os.path.join(a.out, "train_log.json"), json.dumps({"config": vars(a), "history": history}, indent=1))

    tokens_per_step = a.batch_size * a.seq_len
    bar = tqdm(total=a.steps, initial=step, dynamic_ncols=True, disable=a.quiet)
    t0, start = time.time(), step
    while step < a.steps:
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a)
        x, y = get_batch(train_data, a.batch_size, a.seq_len, a.seed, step)
        # bfloat16 autocast: ~1.7x faster on a CPU with avx512_bf16, master weights stay float32
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(x.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens_per_step * (step - start) / (time.time() - t0):.0f}")
        if step % a.eval_every == 0 or step == a.steps:
            val = evaluate(model, val_data, a.seq_len, a.batch_size, device, a.eval_batches)
            best_val = min(best_val, val)
            history.append({"step": step, "train_loss": loss.item(), "val_loss": val,
                            "elapsed_s": round(time.time() - t0, 1)})
            tqdm.write(f"step {step}: train {loss.item():.4f}  val {val:.4f}  lr {lr_at(step, a):.2e}")
        if step % a.save_every == 0 or step == a.steps:
            save()
    bar.close()
    return model


# ----------------------------------------------------------------------------- drafters

@torch.no_grad()
def continue_batch(model, prompts, n_new, generator=None, temperature=1.0, stop_ids=()):
    """Continue each prompt by the model with its KV cache: greedily (generator None, as
    greedy decoding would) or sampled at `temperature`, for n_new tokens or until a stop id.

    prompts: (B, P) tensor -> (B, P + n_new) tensor; or a list of token lists of any
    lengths -> a list of the new tokens of each, ending at its first stop id. Ragged
    prompts are left-padded: padding sits at positions the prompt never reaches and no
    real token attends to it, so every row sees exactly what it would alone.
    """
    device = model.device
    ragged = not torch.is_tensor(prompts)
    rows = [list(p) for p in prompts] if ragged else prompts.tolist()
    B, P = len(rows), max(map(len, rows))
    pad = torch.tensor([P - len(r) for r in rows], device=device)                      # (B,)
    x = torch.tensor([[0] * (P - len(r)) + r for r in rows], device=device)            # (B, P)
    cache = model.new_cache(B, max_len=P + n_new)
    slots = torch.arange(P + n_new, device=device)
    pos = (slots[:P] - pad[:, None]).clamp(min=0)                                       # (B, P)
    # row b's keys start at slot pad[b]; a padding query sees itself (no empty softmax rows)
    mask = (slots[None, None, :P] >= pad[:, None, None]) & Transformer.causal_mask(P, P, device)
    mask |= torch.eye(P, dtype=torch.bool, device=device)
    out, done = [], torch.zeros(B, dtype=torch.bool, device=device)
    stop = torch.tensor(sorted(stop_ids), device=device, dtype=torch.long)
    for step in range(n_new):
        logits = model(x, pos, mask, cache)[:, -1]                                      # (B, V)
        cache.commit()
        if generator is None:
            x = logits.argmax(-1, keepdim=True)                                         # (B, 1)
        else:
            x = torch.multinomial((logits.float() / temperature).softmax(-1), 1, generator=generator)
        out.append(x)
        done |= torch.isin(x[:, 0], stop)
        if ragged and bool(done.all()):
            break
        pos = pos[:, -1:] + 1                                                           # (B, 1)
        mask = (slots[None, None, :P + step + 1] >= pad[:, None, None])                 # (B, 1, S)
    new = torch.cat(out, 1)                                                             # (B, n)
    if not ragged:
        return torch.cat([prompts.to(device), new], 1)
    result = []
    for r in new.tolist():
        ends = [i for i, t in enumerate(r) if t in stop_ids]
        result.append(r[: ends[0] + 1] if ends else r)
    return result


def sample_sequences(model, batch_size, seq_len, bos_id, seed):
    """Text written by the base model itself (temperature 1 from BOS): a corpus for any Llama."""
    device = model.device
    bos = torch.full((batch_size, 1), bos_id, device=device)
    return continue_batch(model, bos, seq_len - 1, torch.Generator(device=device).manual_seed(seed))  # (B, T)


def greedy_data(a):
    """Write OUT/{train,val}.bin: corpus prompts (BOS + --prompt-len tokens) each followed by
    the base model's greedy continuation. Drafters trained on it see what they will see when
    decoding, the model's own text, whose next tokens are far more predictable than a corpus."""
    device = pick_device(a.device)
    model = Transformer.from_pretrained(a.checkpoint, device=device)
    tok = Tokenizer(a.checkpoint)
    splits = {}
    for split, n in [("train", a.sequences), ("val", max(a.batch_size, a.sequences // 16))]:
        data = load_tokens(os.path.join(a.data, f"{split}.bin"), tok)
        seqs = []
        for s in tqdm(range(0, n, a.batch_size), desc=split, disable=a.quiet):
            x, _ = get_batch(data, a.batch_size, a.prompt_len - 1, a.seed + (split == "val"), s)
            prompts = torch.cat([torch.full((a.batch_size, 1), tok.bos_id), x], 1).to(device)   # (B, P)
            seqs.append(continue_batch(model, prompts, a.seq_len - a.prompt_len).cpu())
        splits[split] = torch.cat(seqs).flatten().numpy()
        print(f"{split}: {len(seqs) * a.batch_size} sequences of {a.seq_len} tokens")
    write_tokens(a.out, splits, tok, f"train.py greedy-data --checkpoint {a.checkpoint} --data {a.data}")
    print(f"wrote {a.out}/train.bin, val.bin, meta.json")


def user_turn_prefix(tok):
    """Token ids of the chat template up to where the first user message's text goes
    (system prompt, if the template adds one, and the user header)."""
    mark = "\x00"  # a character no template writes
    ids = tok.apply_chat_template([{"role": "user", "content": mark}], add_generation_prompt=False)
    cut = next(i for i in range(len(ids)) if mark in tok.decode(ids[: i + 1]))
    return ids[:cut]


def read_requests(file, n=None):
    """The first n user requests (None: all) of a JSON file {"prompts": [{"text": ...}, ...]}
    (data/chat_requests.py's and data/chat_prompts.json's format) or ["text", ...]."""
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
        texts = [p if isinstance(p, str) else p["text"] for p in (data["prompts"] if isinstance(data, dict) else data)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--prompts {file}: not a JSON list of requests like data/train_requests.json ({e!r})")
    if n is None:
        return texts
    if len(texts) < n:
        raise ValueError(f"--prompts {file} holds {len(texts)} requests; --sequences and the held-out chats need "
                         f"{n}: write more with `python data/chat_requests.py --n {n}` or lower --sequences")
    return texts[:n]


def answer_requests(model, tok, requests, answer_len):
    """Each request as a user turn in the model's chat template, and the model's greedy answer to it,
    up to answer_len tokens or its end of turn, as greedy decoding with --chat writes it
    -> (prompt ids, answer ids), a list of each."""
    chats = [tok.apply_chat_template([{"role": "user", "content": r}]) for r in requests]
    return chats, continue_batch(model, chats, answer_len, stop_ids=tok.eos_ids)


def chat_data(a):
    """Write OUT/{train,val}.bin: chats the model answers itself, greedily, as greedy decoding with
    --chat would. The user turns are requests from --prompts (held-out chats: the ones after the
    training chats), or else the model samples them after its chat template's user header (no
    corpus and no hand-written prompts needed). Each batch is saved on its own as it completes,
    so an interrupted run resumes where it stopped."""
    n_val = max(a.batch_size, a.sequences // 16)
    given = read_requests(a.prompts, a.sequences + n_val) if a.prompts else None
    device = pick_device(a.device)
    model = Transformer.from_pretrained(a.checkpoint, device=device, dtype=DTYPES[a.dtype])
    tok = Tokenizer(a.checkpoint)
    prefix = user_turn_prefix(tok)
    parts = os.path.join(a.out, "parts")
    os.makedirs(parts, exist_ok=True)
    splits = {}
    for split, n in [("train", a.sequences), ("val", n_val)]:
        ids = []
        for b in tqdm(range(0, n, a.batch_size), desc=split, disable=a.quiet):
            part = os.path.join(parts, f"{split}-{b // a.batch_size:05d}.npy")
            if not os.path.exists(part):
                if given is not None:
                    first = b + (a.sequences if split == "val" else 0)
                    users = given[first: first + min(a.batch_size, n - b)]
                else:
                    seed = a.seed * 1_000_003 + b + (10**9 if split == "val" else 0)
                    gen = torch.Generator(device=device).manual_seed(seed)
                    users = continue_batch(model, [prefix] * a.batch_size, a.user_len, gen, a.temperature,
                                           tok.eos_ids)
                    users = [tok.decode(u).strip() for u in users]
                chats, answers = answer_requests(model, tok, users, a.answer_len)
                rows = np.array([t for c, r in zip(chats, answers) for t in c + r], dtype=np.int64)
                atomic_write(part, lambda f: np.save(f, rows))
            ids.append(np.load(part))
        splits[split] = np.concatenate(ids)
        print(f"{split}: {n} chats, {len(splits[split]):,} tokens")
    write_tokens(a.out, splits, tok, f"train.py chat-data --checkpoint {a.checkpoint}"
                                     + (f" --prompts {a.prompts}" if a.prompts else ""))
    shutil.rmtree(parts)
    print(f"wrote {a.out}/train.bin, val.bin, meta.json")


def tokenize_text(a):
    """Write OUT/{train,val}.bin: a text file in the model's own tokenizer (the last
    --val-fraction of it held out), for `train.py drafter --data OUT`."""
    tok = Tokenizer(a.checkpoint)
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * (1 - a.val_fraction))
    splits = {"train": tok.encode(text[:cut]), "val": tok.encode(text[cut:])}
    write_tokens(a.out, splits, tok, f"train.py tokenize --checkpoint {a.checkpoint} --text {a.text}")
    print(f"train: {len(splits['train']):,} tokens, val: {len(splits['val']):,} tokens -> {a.out}")


def drafter_batches(a, model, split):
    """(tokens, targets) for step s: from the corpus, or sampled from the model (--data self).
    targets None = the base model's own argmax (self-distillation)."""
    if a.data == ["self"]:
        bos = Tokenizer(a.checkpoint).bos_id
        return lambda s: (sample_sequences(model, a.batch_size, a.seq_len, bos,
                                           a.seed * 1_000_003 + s + (10**9 if split == "val" else 0)), None, None)
    tok = Tokenizer(a.checkpoint)
    data = np.concatenate([load_tokens(os.path.join(d, f"{split}.bin"), tok) for d in a.data])
    seed = a.seed + (1 if split == "val" else 0)
    scored = None
    if a.draft_on == "answers":
        scored = answer_tokens(data, tok)
        if not scored.any():
            raise ValueError(f"--draft-on answers: {', '.join(a.data)} ({split}.bin) holds no answer of this "
                             f"model's chat template: make chats with `train.py chat-data`, or use --draft-on all")

    def batch(s):
        x, y, *keep = get_batch(data, a.batch_size, a.seq_len, seed, s, scored)
        return x, None if a.targets == "model" else y, keep[0] if keep else None
    return batch


def bf16_is_fast(device):
    if device.startswith("cuda"):
        return True
    cpu = getattr(torch, "cpu", None)  # private probes: absent on some builds, so default to float32
    return device == "cpu" and any(getattr(cpu, f, lambda: False)()
                                   for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def on(t, device):
    return None if t is None else t.to(device)


def train_drafter(a):
    from transfer import count_tokens, drafter_loss, load_drafter, new_drafter, save_drafter
    torch.manual_seed(a.seed)
    device = pick_device(a.device)
    # nn.Linear, not BlockedLinear: training passes hold hundreds of tokens, where blocks buy
    # nothing, and their backward is slower (a SmolLM2 step: 2.0 s against 2.3 s)
    model = Transformer.from_pretrained(a.checkpoint, device=device, blocked=False)
    model.requires_grad_(False)
    if a.seq_len + a.k > model.args.max_seq_len:
        raise ValueError(f"--seq-len {a.seq_len} + k {a.k} exceeds the model's context {model.args.max_seq_len}")
    drafter = new_drafter(a.kind, model, a.k, a.layer, a.medusa_lm_heads == "own").to(device)
    if a.init:  # more steps on a trained drafter: its weights, a new schedule and optimizer
        start = load_drafter(a.init, model, a.kind)  # checks the kind and the base model
        got = (start.k, getattr(start, "layer", None), getattr(start, "lm_heads", None))
        want = (drafter.k, getattr(drafter, "layer", None), getattr(drafter, "lm_heads", None))
        if got != want:
            raise ValueError(f"--init {a.init} has (k, layer, lm_heads) = {got}, this run {want}: "
                             f"give the same --k, --layer and --medusa-lm-heads")
        drafter.load_state_dict(start.state_dict())
    # the token counts of all the text it has trained on, from which decoding picks a draft vocabulary
    counts = start.token_counts if a.init else None
    for d in [] if a.data == ["self"] else a.data:
        counts = count_tokens(text_tokens(d, "train", a.checkpoint), model.args.vocab_size, counts)
    drafter.token_counts = counts
    opt = torch.optim.AdamW(drafter.parameters(), lr=a.lr, weight_decay=0.0)
    # never the shipped CHECKPOINT/<kind>.safetensors by default: the demo and notebooks load it
    out = a.out or os.path.join("runs", os.path.basename(os.path.normpath(a.checkpoint)),
                                f"{a.kind.replace('-', '_')}.safetensors")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    state_file = out + ".state.pt"
    if not a.resume and os.path.exists(state_file):  # drafter runs take hours: never start over one silently
        raise FileExistsError(f"{state_file} holds another run's state: add --resume to continue that run, or give "
                              f"another --out (or delete {out} and its .state.pt) to start a new one")
    step, history = 0, []
    if a.resume:
        st = resume(state_file, a, device, drafter, "drafter", opt)
        step, history = st["step"], st["history"]
    train_batch, val_batch = drafter_batches(a, model, "train"), drafter_batches(a, model, "val")
    val_set = [(*val_batch(i), spawn_positions(a, -1 - i)) for i in range(a.eval_batches)]  # fixed held-out batches

    def validate():
        drafter.eval()
        with torch.no_grad():
            accs = [drafter_loss(model, drafter, x.to(device), on(y, device), spawn=on(spawn, device),
                                 scored=on(keep, device))[1] for x, y, keep, spawn in val_set]
        drafter.train()
        return [sum(col) / len(col) for col in zip(*accs)]

    print(f"{a.kind} drafter, k={a.k}, layer={getattr(drafter, 'layer', '-')}, "
          f"{sum(p.numel() for p in drafter.parameters()) / 1e6:.2f}M trainable parameters")
    if a.init and not history:  # where a continued run starts, on its own held-out batches (--steps 0: only this)
        history.append({"step": 0, "loss": None, "val_top1": validate(), "seconds": 0})
        tqdm.write("step 0 (--init): val top-1 by position " + " ".join(f"{v:.3f}" for v in history[0]["val_top1"]))
    bar = tqdm(total=a.steps, initial=step, dynamic_ncols=True, disable=a.quiet)
    since = time.time()
    while step < a.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a)
        x, y, keep = train_batch(step)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16):
            loss, acc = drafter_loss(model, drafter, x.to(device), on(y, device),
                                     spawn=on(spawn_positions(a, step), device), scored=on(keep, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), a.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=" ".join(f"{v:.2f}" for v in acc))
        if step % a.eval_every == 0 or step == a.steps:
            val = validate()
            # wall clock over every session of the run, resumed ones included
            seconds = (history[-1].get("seconds", 0) if history else 0) + time.time() - since
            since = time.time()
            history.append({"step": step, "loss": loss.item(), "val_top1": val, "seconds": round(seconds)})
            tqdm.write(f"step {step}: loss {loss.item():.4f}  val top-1 by position " +
                       " ".join(f"{v:.3f}" for v in val) + f"  ({seconds / 60:.1f} min so far)")
            save_drafter(drafter, model, out, dtype=torch.bfloat16)
            atomic_torch_save({"drafter": drafter.state_dict(), "optimizer": opt.state_dict(), "step": step,
                               "history": history, "rng": torch.get_rng_state(), "config": vars(a)}, state_file)
    bar.close()
    print(f"saved {out}" if step else "no steps taken: nothing saved")
    return history


def text_tokens(data_dir, split, checkpoint):
    """A data folder's split as an int64 tensor, its ids checked against the model's tokenizer."""
    data = load_tokens(os.path.join(data_dir, f"{split}.bin"), Tokenizer(checkpoint))
    return torch.from_numpy(data.astype(np.int64))


def count_tokens_cmd(a):
    """Set a drafter file's token counts to those of the given training texts (drafter runs record
    their own; this is for files from before they did, or to count other text)."""
    from safetensors import safe_open
    from transfer import count_tokens, load_drafter, save_drafter
    model = Transformer.from_pretrained(a.checkpoint, blocked=False)
    drafter = load_drafter(a.drafter, model)  # checks that it belongs to this model
    counts = None
    for d in a.data:
        counts = count_tokens(text_tokens(d, "train", a.checkpoint), model.args.vocab_size, counts)
    drafter.token_counts = counts
    with safe_open(a.drafter, "pt") as f:  # the file's own storage type: its weights are written back unchanged
        dtype = next(f.get_tensor(k).dtype for k in f.keys() if k != "token_counts")
    save_drafter(drafter, model, a.drafter, dtype=dtype)
    print(f"{a.drafter}: counts of {int(counts.sum()):,} tokens ({int((counts > 0).sum()):,} distinct) of "
          + ", ".join(a.data))


def eval_cmd(a):
    model = Transformer.from_pretrained(a.checkpoint, device=pick_device(a.device))
    data = load_tokens(os.path.join(a.data, "val.bin"), Tokenizer(a.checkpoint))
    loss = evaluate(model, data, a.seq_len, 16, pick_device(a.device))
    print(f"held-out loss {loss:.4f} nats/token, perplexity {math.exp(loss):.2f} "
          f"({(len(data) - 1) // a.seq_len * a.seq_len} tokens in windows of {a.seq_len})")


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    # settings every training run shares: optimisation, precision, seed, resuming
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lr", type=float, default=1e-3)
    common.add_argument("--min-lr", type=float, default=1e-4)
    common.add_argument("--grad-clip", type=float, default=1.0)
    common.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast (default: on CUDA, and on CPUs with avx512_bf16 or AMX; "
                             "elsewhere bfloat16 is emulated and many times slower than float32)")
    common.add_argument("--seed", type=int, default=1337)
    common.add_argument("--device", default=None)
    common.add_argument("--resume", action="store_true", help="continue the interrupted run from its state file")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    # The defaults are the shipped model's settings: `python train.py pretrain` reproduces it.
    pt = sub.add_parser("pretrain", parents=[common], help="train a Llama from scratch on a tokenized corpus")
    pt.add_argument("--data", default="data/shakespeare", help="folder with train.bin and val.bin")
    pt.add_argument("--tokenizer", default="checkpoints/shakespeare/tokenizer.model")
    pt.add_argument("--out", default="checkpoints/shakespeare")
    pt.add_argument("--dim", type=int, default=288)
    pt.add_argument("--n-layers", type=int, default=6)
    pt.add_argument("--n-heads", type=int, default=6)
    pt.add_argument("--n-kv-heads", type=int, default=2)
    pt.add_argument("--hidden-dim", type=int, default=768)
    pt.add_argument("--max-seq-len", type=int, default=512)
    pt.add_argument("--tie-embeddings", action="store_true")
    pt.add_argument("--seq-len", type=int, default=512, help="training context")
    pt.add_argument("--batch-size", type=int, default=8)
    pt.add_argument("--steps", type=int, default=2000)
    pt.add_argument("--warmup", type=int, default=100)
    pt.add_argument("--weight-decay", type=float, default=0.1)
    pt.add_argument("--eval-every", type=int, default=250)
    pt.add_argument("--eval-batches", type=int, default=8)
    pt.add_argument("--save-every", type=int, default=100)

    ev = sub.add_parser("eval", help="held-out loss and perplexity of a checkpoint")
    ev.add_argument("--checkpoint", default="checkpoints/shakespeare")
    ev.add_argument("--data", default="data/shakespeare")
    ev.add_argument("--seq-len", type=int, default=512)
    ev.add_argument("--device", default=None)

    dr = sub.add_parser("drafter", parents=[common], help="train a drafter on a frozen base model")
    dr.add_argument("--checkpoint", default="checkpoints/shakespeare", help="the base model")
    dr.add_argument("--kind", default="hidden-transfer", choices=["hidden-transfer", "medusa"],
                    help="hidden-transfer: k maps at layer t; medusa: k heads on the final hidden state")
    dr.add_argument("--k", type=int, default=4, help="future positions drafted per step")
    dr.add_argument("--medusa-lm-heads", choices=["own", "shared"], default="own",
                    help="medusa: an LM head per head (Medusa-1), or all through the base model's frozen "
                         "one (k(d^2+d) parameters, hidden transfer's budget)")
    dr.add_argument("--layer", type=int, default=None,
                    help="hidden-transfer: transfer layer t, 1 <= t < L (default L/2)")
    dr.add_argument("--data", nargs="+", default=["data/shakespeare"],
                    help="folders with train.bin/val.bin (several: their texts joined), or 'self' for text "
                         "sampled from the base model")
    dr.add_argument("--draft-on", choices=["all", "answers"], default="all",
                    help="which targets the loss counts: every token, or only the model's own turns in chats "
                         "(train.py chat-data's), the tokens decoding drafts")
    dr.add_argument("--targets", choices=["model", "data"], default="model",
                    help="model: the base model's own argmax (self-distillation); data: the text's next token")
    dr.add_argument("--init", default=None,
                    help="start from this trained drafter file (same kind, k, layer, base model) instead of "
                         "identity maps / zero heads: more steps with a new schedule")
    dr.add_argument("--out", default=None, help="default: runs/<checkpoint name>/<kind>.safetensors "
                                                 "(never the shipped drafter beside the checkpoint)")
    dr.add_argument("--seq-len", type=int, default=256)
    dr.add_argument("--batch-size", type=int, default=8)
    dr.add_argument("--steps", type=int, default=600)
    dr.add_argument("--warmup", type=int, default=30)
    dr.add_argument("--eval-every", type=int, default=100)
    dr.add_argument("--eval-batches", type=int, default=4)
    dr.add_argument("--spawn", type=int, default=None,
                    help="positions per sequence that draft (random each step; default: all). Hidden "
                         "transfer's pass then carries spawn*k pseudo tokens instead of seq-len*k")

    ct = sub.add_parser("count-tokens", help="record the token counts of training text in a drafter file, "
                                             "from which decoding picks a draft vocabulary (--draft-vocab)")
    ct.add_argument("--checkpoint", default="checkpoints/shakespeare", help="the base model")
    ct.add_argument("--drafter", required=True, help="the drafter file to update (rewritten in place, atomically)")
    ct.add_argument("--data", nargs="+", required=True, help="folders whose train.bin the drafter trained on")

    gd = sub.add_parser("greedy-data", help="the base model's greedy continuations of corpus prompts")
    gd.add_argument("--checkpoint", default="checkpoints/shakespeare")
    gd.add_argument("--data", default="data/shakespeare", help="folder with the corpus's train.bin and val.bin")
    gd.add_argument("--out", default="data/shakespeare-greedy")
    gd.add_argument("--sequences", type=int, default=2048, help="training sequences (validation: 1/16 of it)")
    gd.add_argument("--seq-len", type=int, default=257, help="tokens per sequence, prompt included")
    gd.add_argument("--prompt-len", type=int, default=32, help="BOS + corpus tokens before the greedy part")
    gd.add_argument("--batch-size", type=int, default=64)
    gd.add_argument("--seed", type=int, default=1337)
    gd.add_argument("--device", default=None)
    gd.add_argument("--quiet", action="store_true")

    cd = sub.add_parser("chat-data", help="chats the model answers greedily: requests from a file, or user "
                                              "turns it samples itself")
    cd.add_argument("--checkpoint", default="checkpoints/smollm2", help="a model with a chat template")
    cd.add_argument("--prompts", default=None, help="a JSON file of user requests to answer (data/chat_requests.py "
                                                     "writes one) instead of user turns the model samples")
    cd.add_argument("--out", default="data/smollm2-chat")
    cd.add_argument("--sequences", type=int, default=1024, help="training chats (validation: 1/16 of it, at least "
                                                                  "--batch-size)")
    cd.add_argument("--user-len", type=int, default=48, help="most tokens of a sampled user message")
    cd.add_argument("--answer-len", type=int, default=192, help="most tokens of a greedy answer")
    cd.add_argument("--temperature", type=float, default=1.0, help="for the user messages")
    cd.add_argument("--batch-size", type=int, default=16)
    cd.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    cd.add_argument("--seed", type=int, default=1337)
    cd.add_argument("--device", default=None)
    cd.add_argument("--quiet", action="store_true")

    tz = sub.add_parser("tokenize", help="a text file in the model's own tokenizer, for drafter training")
    tz.add_argument("--checkpoint", required=True)
    tz.add_argument("--text", required=True, help="a UTF-8 text file")
    tz.add_argument("--out", required=True, help="folder for train.bin, val.bin and meta.json")
    tz.add_argument("--val-fraction", type=float, default=0.05)

    a = p.parse_args(argv)
    try:
        return run(p, a)  # a drafter run's history, for tests and notebooks
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}")


def run(p, a):
    if getattr(a, "bf16", False) is None:
        a.bf16 = bf16_is_fast(pick_device(a.device))
    if a.cmd == "chat-data":
        chat_data(a)
    elif a.cmd == "tokenize":
        tokenize_text(a)
    elif a.cmd == "greedy-data":
        if not 1 <= a.prompt_len < a.seq_len:
            p.error("--prompt-len must be in 1..--seq-len - 1")
        greedy_data(a)
    elif a.cmd == "drafter":
        if a.spawn is not None and a.spawn < 1:
            p.error("--spawn must be >= 1 (or left out: every position drafts)")
        if "self" in a.data and (len(a.data) > 1 or a.draft_on != "all"):
            p.error("--data self samples text from the model: no other folder, and no --draft-on answers")
        if a.kind != "medusa" and a.medusa_lm_heads != "own":
            p.error("--medusa-lm-heads applies to --kind medusa")
        return train_drafter(a)
    elif a.cmd == "count-tokens":
        count_tokens_cmd(a)
    elif a.cmd == "pretrain":
        pretrain(a)
    elif a.cmd == "eval":
        eval_cmd(a)


if __name__ == "__main__":
    main()
