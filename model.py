"""A small, readable Llama: the model, its KV cache, and weight loading.

The forward pass takes explicit positions, an explicit attention mask over
[cached ; new] tokens and a cache that the caller commits to. That is all tree
attention and hidden transfer need: no second model class, no special cases.
"""
import ctypes
import functools
import glob
import hashlib
import json
import math
import os
import struct
import subprocess
import warnings
from collections import namedtuple
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    dim: int = 288               # residual stream width d
    n_layers: int = 6            # L transformer blocks
    n_heads: int = 6             # query heads
    n_kv_heads: int = 2          # key/value heads (grouped-query attention when < n_heads)
    vocab_size: int = 4096
    hidden_dim: int = 768        # SwiGLU width
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Llama 3.1 "llama3" frequency scaling, or None
    max_seq_len: int = 512       # longest sequence (prompt + generation) the model serves
    tie_embeddings: bool = False  # output projection shares the token embedding matrix
    head_dim: int | None = None  # None: dim // n_heads

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        s = self.rope_scaling
        if s is not None and s.get("rope_type", "llama3") != "llama3":
            raise ValueError(f"unsupported rope_scaling {s}: only type 'llama3' is implemented")
        missing = [key for key in LLAMA3_ROPE_KEYS if s is not None and key not in s]
        if missing:
            raise ValueError(f"rope_scaling {s} lacks {', '.join(missing)}: "
                             f"Llama 3.1's rule needs all of {', '.join(LLAMA3_ROPE_KEYS)}")


LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


# ----------------------------------------------------------------------------- layers

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # x / sqrt(mean(x^2) + eps), in float32 like the reference code whatever the model
        # dtype; F.rms_norm is that formula as one fused kernel (no weight: it is applied after)
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight


def rope_frequencies(args: ModelArgs):
    """Inverse frequencies (head_dim/2,), with Llama 3.1's long-context scaling if asked for."""
    hd = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64, device="cpu") / hd))
    s = args.rope_scaling
    if s is not None:
        # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between
        factor, lo, hi, old_len = (s[key] for key in LLAMA3_ROPE_KEYS)
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_len / lo, inv_freq / factor,
                               torch.where(wavelen < old_len / hi, inv_freq, blended))
    return inv_freq


def apply_rope(x, cos, sin):
    # Meta's layout: dims (2i, 2i+1) of each head form one rotating pair, turned by the angle
    # whose cos/sin are given: the pair as a complex number times cos + i sin, one kernel
    # where the same product written out in reals (rotate_pairs, for MPS: no complex tensors
    # there) takes ten. x: (B, H, T, hd), cos/sin: (B, 1, T, hd/2)
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, H, T, hd/2, 2)
    if x.device.type == "mps":
        return rotate_pairs(pairs, cos, sin).flatten(-2).type_as(x)
    return torch.view_as_real(torch.view_as_complex(pairs) * torch.complex(cos, sin)).flatten(-2).type_as(x)


def rotate_pairs(pairs, cos, sin):
    x0, x1 = pairs.unbind(-1)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.register_buffer("wqkv", None, persistent=False)  # block_linears_: wq, wk, wv's blocks in one

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        B, T, _ = x.shape
        nh, nkv = self.n_heads, self.n_kv_heads
        if self.wqkv is not None:  # one product instead of three (blocked weights, see block_linears_)
            qkv = blocked_matmul(x, self.wqkv)
        else:
            qkv = torch.cat([self.wq(x), self.wk(x), self.wv(x)], dim=-1)
        qkv = qkv.view(B, T, nh + 2 * nkv, self.head_dim).transpose(1, 2)  # (B, nh + 2 nkv, T, hd): q, k, v heads
        qk = apply_rope(qkv[:, :nh + nkv], cos, sin)  # queries and keys turned in one go
        q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, nh + nkv:]  # (B, nh, T, hd), (B, nkv, T, hd) x 2
        if cache is not None:
            k, v = cache.write(layer, k, v)  # (B, nkv, S, hd): committed prefix + these T tokens
        # grouped-query attention: each kv head serves n_heads / n_kv_heads query heads
        # (enable_gqa does that without copying the cached keys and values). No mask and
        # several tokens: causal among them, SDPA's own kernel, no dense mask (run_blocks
        # passes an explicit mask whenever a cached prefix comes before them).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                           enable_gqa=self.n_heads != self.n_kv_heads)  # (B, nh, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)  # down
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)  # up
        self.register_buffer("w13", None, persistent=False)  # block_linears_: w1, w3's blocks in one

    def forward(self, x):
        if self.w13 is not None:
            gate, up = blocked_matmul(x, self.w13).chunk(2, dim=-1)
        else:
            gate, up = self.w1(x), self.w3(x)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


# ----------------------------------------------------------------------------- KV cache

class KVCache:
    """Keys and values for every layer.

    Invariant: slots [0, length) of every layer hold the committed tokens at
    positions 0..length-1, in order. A forward pass writes its new tokens'
    entries after them, at [length, length + T) — T may differ per layer (hidden
    transfer adds pseudo tokens in the upper blocks only) — and leaves them
    pending. `commit(keep)` then keeps the chosen new entries, moved to the
    next contiguous slots; everything else is forgotten at the next write.

    max_len: the slots to allocate up front. None: a few, doubled whenever a write
    needs more, up to the model's context (a 128k-context Llama would otherwise
    allocate 128k slots per layer for a short chat).
    """

    def __init__(self, args: ModelArgs, batch_size=1, max_len=None, device=None, dtype=None):
        self.max_len = max_len or args.max_seq_len  # slots it may grow to
        shape = (args.n_layers, batch_size, args.n_kv_heads, max_len or min(256, self.max_len), args.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0   # committed tokens
        self.pending = 0  # new tokens of the last forward: what the lowest block it ran wrote
        self.pending_layer = math.inf  # that block (self-spec's draft model may skip block 0)

    def write(self, layer, k, v):
        T = k.shape[2]
        end = self.length + T
        if end > self.k.shape[3]:
            self._grow(end)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        if layer <= self.pending_layer:  # a forward writes its blocks in order: a lower one starts a new one
            self.pending, self.pending_layer = T, layer
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def _grow(self, end):
        if end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {self.length} cached + {end - self.length} new > {self.max_len} slots")
        slots = min(self.max_len, max(end, 2 * self.k.shape[3]))
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[:3] + (slots,) + old.shape[4:])
            new[:, :, :, : old.shape[3]] = old
            setattr(self, name, new)

    def commit(self, keep=None):
        """Keep all pending entries (keep=None), or those at indices `keep` into the new tokens."""
        keep = range(self.pending) if keep is None else [int(i) for i in keep]
        n = len(keep)
        if list(keep) != list(range(n)):  # a prefix of the new tokens is in place already
            src = self.length + torch.tensor(keep, device=self.k.device)
            # gather first, then write: source and destination slots may overlap
            self.k[:, :, :, self.length:self.length + n] = self.k[:, :, :, src]
            self.v[:, :, :, self.length:self.length + n] = self.v[:, :, :, src]
        self.length += n
        self.pending, self.pending_layer = 0, math.inf

    def rewind(self, n):
        """Forget the committed tokens after the first n (a draft model backing up)."""
        self.length, self.pending, self.pending_layer = min(n, self.length), 0, math.inf


# ----------------------------------------------------------------------------- the model

class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        # nn.Embedding's own N(0, 1) init, drawn here and only for real tensors: on the meta device
        # (from_pretrained builds the model there) torch routes normal_ through code that imports
        # torch._dynamo, 1.2-1.5 s of every process's first model load, for values nobody reads.
        table = torch.empty(args.vocab_size, args.dim)
        table = table if table.is_meta else table.normal_()
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, _weight=table)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # RoPE tables (max_seq_len, hd/2), computed once in float64 and kept in float32, on the CPU
        # even when the model is built on the meta device (the forward pass moves them to the
        # activations' device). Plain attributes, not buffers, so that model.to(bfloat16) never rounds them.
        angles = torch.outer(torch.arange(args.max_seq_len, dtype=torch.float64, device="cpu"), rope_frequencies(args))
        self.rope_cos, self.rope_sin = angles.cos().float(), angles.sin().float()

    def init_weights(self, seed=0):
        """GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2L)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue  # norm gains stay 1
            std = 0.02 / math.sqrt(2 * self.args.n_layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)
        return self

    # The three pieces of a forward pass, usable on their own by hidden transfer.

    def embed(self, tokens):
        if self.tok_embeddings is None:  # tied, and the LM head blocked (block_linears_): same table
            return self.output.rows(tokens)
        return self.tok_embeddings(tokens)  # (B, T) -> (B, T, d)

    def run_blocks(self, h, pos, mask=None, cache=None, start=0, end=None, return_all=False):
        """Run blocks [start, end) on hidden states h (B, T, d) at positions pos (T,) or (B, T).

        mask: bool (T, S) or (B, T, S), True = may attend, over S = [cached ; new] keys
        (None: causal). Returns h after block end-1, or with return_all the list of
        h after each block run. Positions index the RoPE tables, so they must be below
        max_seq_len; checking them here would make the host wait for the device at every
        call, so the callers check the Python ints they make them from (forward, decode.py).
        """
        end = self.args.n_layers if end is None else end
        T = h.shape[1]
        S = (cache.length if cache is not None else 0) + T
        if mask is None and 1 < T < S:  # causal after a cached prefix: new token i sees slots <= S - T + i
            mask = self.causal_mask(T, S, h.device)  # (with no prefix, SDPA's causal kernel needs no mask)
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, 1, T, S): same mask for every head
        if self.rope_cos.device != h.device:
            self.rope_cos, self.rope_sin = self.rope_cos.to(h.device), self.rope_sin.to(h.device)
        cos = self.rope_cos[pos].unsqueeze(-3)  # (1 or B, 1, T, hd/2)
        sin = self.rope_sin[pos].unsqueeze(-3)
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        hs = []
        for i in range(start, end):
            h = self.layers[i](h, cos, sin, mask, cache, i)
            hs.append(h)
        return hs if return_all else h

    def logits(self, h):
        return self.output(self.norm(h))  # (B, T, d) -> (B, T, vocab)

    @staticmethod
    def causal_mask(T, S, device=None):
        # new token i sits at slot S - T + i and sees every slot up to its own
        return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)

    def forward(self, tokens, pos=None, mask=None, cache=None):
        """tokens (B, T) -> logits (B, T, vocab) for every position.

        Without a cache, positions default to 0..T-1; with one, to the slots after
        the committed tokens. The new entries stay pending in the cache until the
        caller commits them.
        """
        if pos is None:
            offset = cache.length if cache is not None else 0
            pos = self.positions(offset, tokens.shape[1], tokens.device)
        h = self.run_blocks(self.embed(tokens), pos, mask, cache)
        return self.logits(h)

    def positions(self, start, T, device=None):
        """(T,) positions start..start+T-1, refused past the context (Python ints: no device sync)."""
        if start + T > self.args.max_seq_len:
            raise ValueError(f"position {start + T - 1} is beyond max_seq_len={self.args.max_seq_len}")
        return torch.arange(start, start + T, device=device)

    def new_cache(self, batch_size=1, max_len=None):
        """A KV cache on the model's device and dtype; max_len=None grows it as needed."""
        return KVCache(self.args, batch_size, max_len, device=self.device, dtype=self.dtype)

    @property
    def device(self):
        return self.norm.weight.device

    @property
    def dtype(self):
        return self.norm.weight.dtype

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=torch.float32, blocked=True):
        """Load an eval-mode model from a Hugging Face, Meta or project checkpoint directory.
        blocked: the CPU weight layout of block_linears_ (False: nn.Linear's, as on disk)."""
        args, state = load_checkpoint(path)
        with torch.device("meta"):  # no memory, no random init: the weights come from the files
            model = cls(args)
        if args.tie_embeddings:
            state["output.weight"] = state["tok_embeddings.weight"]
        model.load_state_dict(state, assign=True)  # keys and shapes were checked by load_checkpoint
        if args.tie_embeddings:
            model.output.weight = model.tok_embeddings.weight
        model = model.to(device=device, dtype=dtype).eval()
        if blocked:
            block_linears_(model)  # copies the linear weights
        copied = {id(m.blocks) for m in model.modules() if isinstance(m, BlockedLinear)}
        for p in model.parameters():
            # the rest may still be views of the memory-mapped file, which would keep all of it
            # resident beside our copies: copy them too (norm gains, an untied embedding)
            if p.device.type == "cpu" and p.is_contiguous() and id(p) not in copied:
                p.data = p.data.clone()
        return model

    def save_pretrained(self, path, dtype=None):
        """Write params.json + model.safetensors (Meta names and RoPE layout), atomically.
        dtype: the weights' storage type (bfloat16 halves the file, as published Llamas do)."""
        from safetensors.torch import save
        os.makedirs(path, exist_ok=True)
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        if self.args.tie_embeddings:  # stored once, as tok_embeddings.weight
            state["tok_embeddings.weight"] = state.pop("output.weight")
        atomic_write(os.path.join(path, "model.safetensors"), lambda f: f.write(save(state, metadata={"format": "pt"})))
        atomic_write_text(os.path.join(path, "params.json"), json.dumps(vars(self.args), indent=2) + "\n")


class BlockedLinear(nn.Module):
    """A linear map y = x W^T whose weight W (out, in) is stored in column blocks, for CPU passes
    of a few tokens. block_linears_ swaps it in for nn.Linear after loading.

    Block j holds W's rows jB..jB+B-1 transposed, (in, B) contiguous: blocks (out/B, in, B).
    One batched matmul (n, in) @ (out/B, in, B) -> (out/B, n, B) computes every block's B
    outputs, reading each block once, as one contiguous run, for all n tokens. MKL's kernels
    behind F.linear read (out, in) weights for 2-16 tokens 1.5-3x slower than for one token,
    though it is the same bytes; the blocked product costs about the same for 1-4 tokens, and
    less than F.linear even at one. That is what makes a tree's pass cheap on a CPU;
    blocked_matmul.c, where it can be built, reads the blocks faster still (bench.py prints all
    three pass-cost curves). The values are unchanged: `weight` and the state_dict give W (out,
    in) back, as a copy, for the few readers that want the matrix (writing to that copy changes
    nothing: load with from_pretrained(..., blocked=False) to edit weights in place).
    """

    def __init__(self, linear: nn.Linear, block=16):
        super().__init__()
        w = linear.weight.detach()
        self.out_features, self.in_features = w.shape
        self.block = block
        blocks = w.reshape(self.out_features // block, block, self.in_features).mT.contiguous()  # (out/B, in, B)
        self.blocks = nn.Parameter(blocks, requires_grad=False)
        self.bias = linear.bias

    @property
    def weight(self):
        return self.blocks.mT.reshape(self.out_features, self.in_features)  # (out, in), a copy

    def forward(self, x):
        y = blocked_matmul(x, self.blocks)
        return y if self.bias is None else y + self.bias

    def entries(self, idx):
        """W.flatten()[idx] without building W."""
        r, c = idx // self.in_features, idx % self.in_features
        return self.blocks[r // self.block, c, r % self.block]

    def rows(self, ids):
        """W[ids] (..., in): the rows of a tied embedding table stored as this LM head."""
        return self.blocks[ids // self.block, :, ids % self.block]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight  # what nn.Linear would save
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()


def blocked_matmul(x, blocks, long_pass=256):
    """x (..., in) times the matrix stored as blocks (out/B, in, B) -> (..., out). A pass of fewer than
    long_pass tokens: blocked_matmul.c where it applies (kernel_for), else one batched torch.matmul."""
    x2 = x.reshape(-1, blocks.shape[1])  # (n, in)
    kernel = kernel_for(x2, blocks) if 0 < x2.shape[0] < long_pass else None  # (no rows: nothing to call it for)
    if kernel:  # a short pass: blocked_matmul.c
        x2 = x2.contiguous()
        y = x2.new_empty(x2.shape[0], blocks.shape[0] * blocks.shape[2])
        kernel.blocked_matmul(x2.data_ptr(), blocks.data_ptr(), y.data_ptr(), x2.shape[0], blocks.shape[1],
                              blocks.shape[0], torch.get_num_threads())
    elif x2.shape[0] >= long_pass:
        # A long pass (a prompt, a text to train or analyse on): there the blocks' narrow products
        # lose to F.linear's wide one (SmolLM2's LM head, 1024 rows: 1.7 s vs 1.1 s), so rebuild W
        # 64 blocks (1024 rows) at a time, a copy that stays in cache, and let F.linear run on each.
        y = torch.cat([F.linear(x2, b.mT.reshape(-1, blocks.shape[1])) for b in blocks.split(64)], -1)
    else:
        y = torch.matmul(x2, blocks).transpose(0, 1).flatten(1)  # (out/B, n, B) -> (n, out): block j's at jB..jB+B-1
    return y.reshape(*x.shape[:-1], y.shape[-1])


# The C kernel for short passes (blocked_matmul.c): on by default where it can be built; HT_NATIVE_KERNEL=0 in the
# environment, or model.USE_NATIVE_KERNEL = False, leaves every product to torch (bench.py times both).
USE_NATIVE_KERNEL = os.environ.get("HT_NATIVE_KERNEL", "1") != "0"
KERNEL_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blocked_matmul.c")


def kernel_for(x, blocks):
    """The C kernel where it applies (else None): a float32 CPU product over blocks of 16 that autograd
    need not see (a drafter's training passes gradients back through the base model's blocks)."""
    if not (USE_NATIVE_KERNEL and x.device.type == "cpu" and x.dtype == blocks.dtype == torch.float32
            and blocks.shape[2] == 16 and blocks.is_contiguous()):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or blocks.requires_grad):
        return None
    return native_kernel()


@functools.lru_cache(maxsize=1)
def native_kernel():
    """blocked_matmul.c compiled for this machine and loaded (ctypes), or None where it cannot run:
    not an x86 CPU with AVX2 and FMA, or no C compiler ($CC, else cc). Built once into
    ~/.cache/hidden-transfer/ (or $XDG_CACHE_HOME's), named by a hash of the source and the command,
    so an edited source is rebuilt. It finds OpenMP in the libgomp torch has loaded already."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    cc = os.environ.get("CC", "cc")
    flags = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
    with open(KERNEL_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read() + " ".join([cc] + flags).encode()).hexdigest()[:16]
    folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hidden-transfer")
    lib = os.path.join(folder, f"blocked_matmul-{digest}.so")
    try:
        if not os.path.exists(lib):
            os.makedirs(folder, exist_ok=True)
            tmp = f"{lib}.{os.getpid()}.tmp"  # built aside, then renamed: no parallel worker loads half a file
            subprocess.run([cc, *flags, KERNEL_SOURCE, "-o", tmp], check=True, capture_output=True, text=True)
            os.replace(tmp, lib)
        kernel = ctypes.CDLL(lib)
    except (OSError, subprocess.CalledProcessError) as e:  # no compiler, a failed build, a read-only cache folder
        detail = getattr(e, "stderr", None) or e
        warnings.warn(f"blocked_matmul.c was not built or loaded ({cc}: {detail}); short CPU passes use torch.matmul, "
                      f"about 1.3-1.6x slower for a tree's pass. Install a C compiler (gcc) or set CC to one, and let "
                      f"it write to {folder} (or set XDG_CACHE_HOME); HT_NATIVE_KERNEL=0 turns the kernel off.")
        return None
    kernel.blocked_matmul.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    kernel.blocked_matmul.restype = None
    return kernel


def fuse_blocks(*linears):
    """One blocks tensor for BlockedLinears that read the same input, stacked in order, for one
    product in place of several: a block's outputs depend on it alone, so each output is computed
    exactly as before. Each linear's blocks become a view of it (the weights stay in memory once)."""
    fused = torch.cat([m.blocks for m in linears])  # (sum of out/B, in, B)
    start = 0
    for m in linears:
        n = m.blocks.shape[0]
        m.blocks = nn.Parameter(fused[start:start + n], requires_grad=False)
        start += n
    return fused


def block_linears_(module, block=16):
    """Swap every nn.Linear of `module` on a CPU in float32/float64 for a BlockedLinear, in place;
    returns module. Weights whose out features B does not divide keep their layout. bfloat16 and
    float16 keep nn.Linear: their CPU kernels are other ones, and this VM's (no avx512_bf16) are
    compute-bound, where a layout buys nothing. A tied embedding table (Transformer) is then read
    from the LM head's blocks (Transformer.embed), so the weights stay in memory once. A layout
    for the CPU it is made on: moved to another device or dtype afterwards, the fused products'
    weights and their parts' views would be copied apart (load there instead: from_pretrained
    blocks only on a CPU in float32/float64).
    """
    for parent in list(module.modules()):
        for name, m in list(parent.named_children()):
            w = m.weight if type(m) is nn.Linear else None
            if (w is not None and w.device.type == "cpu" and w.dtype in (torch.float32, torch.float64)
                    and w.shape[0] % block == 0):
                setattr(parent, name, BlockedLinear(m, block))
    # Then the products that read the same input become one: 4 matmuls per block instead of 7,
    # each with a fixed cost that a pass of a few tokens feels (SmolLM2: ~5% of a one-token pass).
    fusable = lambda *ws: all(isinstance(w, BlockedLinear) and w.bias is None for w in ws)
    for m in module.modules():
        if isinstance(m, Attention) and fusable(m.wq, m.wk, m.wv):
            m.wqkv = fuse_blocks(m.wq, m.wk, m.wv)
        if isinstance(m, FeedForward) and fusable(m.w1, m.w3):
            m.w13 = fuse_blocks(m.w1, m.w3)
    if isinstance(module, Transformer) and module.args.tie_embeddings and isinstance(module.output, BlockedLinear):
        module.tok_embeddings = None  # the table is the LM head's weight: embed() reads its blocks
    return module


def atomic_write(path, write, mode="wb"):
    """write(file object) into path + ".tmp", then rename: an interrupted run leaves the old
    file or the new one, never half of one."""
    with open(path + ".tmp", mode) as f:
        write(f)
    os.replace(path + ".tmp", path)


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text), "w")


# ----------------------------------------------------------------------------- weight loading

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def pick_device(name=None):
    """name, or the best device present: cuda, then mps, then cpu."""
    if name:
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"

#
# Three layouts, one internal format (Meta's names, Meta's RoPE pairing):
#   Hugging Face: config.json + model*.safetensors | pytorch_model*.bin
#   Meta:         params.json + consolidated.NN.pth (NN = model-parallel shard)
#   ours:         params.json + model.safetensors (written by save_pretrained)

HF_NAMES = {  # Hugging Face name -> our name, {i} = layer index
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "layers.{i}.attention.wq.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "layers.{i}.attention.wk.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "layers.{i}.attention.wv.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attention.wo.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.feed_forward.w1.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.feed_forward.w2.weight",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.feed_forward.w3.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
}

# Meta's model-parallel shards: the axis each tensor is split along (None: replicated)
META_SHARD_AXIS = {"wq": 0, "wk": 0, "wv": 0, "wo": 1, "w1": 0, "w3": 0, "w2": 1, "output": 0}


def hf_to_meta_rope(w, n_heads):
    # HF stores each head's rotary pairs as (first half, second half); Meta interleaves
    # them (2i, 2i+1). Undo the permutation of HF's conversion script, per head.
    out_dim, in_dim = w.shape
    return w.view(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def meta_to_hf_rope(w, n_heads):
    out_dim, in_dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def load_checkpoint(path):
    """(ModelArgs, state dict in our names) from any supported checkpoint; every key and shape checked.
    path: a folder (Hugging Face, Meta, ours, or one holding a .gguf file) or a .gguf file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"{path!r} is a file but not a .gguf file: point --checkpoint at a checkpoint "
                             f"folder (Hugging Face, Meta or ours) or at a .gguf file")
        args, state, source = _load_gguf(path)
    elif os.path.exists(os.path.join(path, "config.json")):
        args, state, source = _load_hf(path)
    elif os.path.exists(os.path.join(path, "params.json")):
        args, state, source = _load_meta_or_ours(path)
    elif gguf_file(path):
        args, state, source = _load_gguf(gguf_file(path))
    else:
        raise FileNotFoundError(
            f"{path!r} holds neither config.json (Hugging Face layout), params.json (Meta or this "
            f"project's layout) nor a .gguf file; point --checkpoint at the folder with the weights")
    _check_state(args, state, source, path)
    return args, state


def gguf_file(path):
    """The one .gguf file in folder `path` (None if there is none); a .gguf path is returned as is."""
    if os.path.isfile(path):
        return path if path.endswith(".gguf") else None
    files = sorted(glob.glob(os.path.join(path, "*.gguf")))
    if len(files) > 1:
        raise ValueError(f"{path!r} holds {len(files)} .gguf files ({', '.join(map(os.path.basename, files))}): "
                         f"pass the one to use, e.g. --checkpoint {files[0]}")
    return files[0] if files else None


def _read_json(file):
    try:
        with open(file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None


def _torch_load(file):
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ValueError(f"cannot read weights from {file}: {e}") from None


def _safetensors_load(file):
    from safetensors.torch import load_file
    try:
        # load_file's tensors are views of the memory-mapped file, and any one still alive
        # (a norm weight) would keep every page of it resident next to our own copies
        return load_file(file)  # views of the memory-mapped file: from_pretrained copies them once
    except Exception as e:
        raise ValueError(f"cannot read weights from {file}: {e}") from None


def _load_hf(path):
    cfg_file = os.path.join(path, "config.json")
    cfg = _read_json(cfg_file)
    if cfg.get("model_type") != "llama":
        raise ValueError(f"{cfg_file}: model_type {cfg.get('model_type')!r} is not supported, only 'llama'")
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise ValueError(f"{cfg_file}: {flag}=true is not supported (Llama has no biases)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{cfg_file}: hidden_act {cfg['hidden_act']!r} is not supported, only 'silu'")
    # rope settings: top level (Llama 2/3 as published) or rope_parameters (newer transformers)
    rope = dict(cfg.get("rope_parameters") or {})
    theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "default":
            scaling = None
        elif kind != "llama3":
            raise ValueError(f"{cfg_file}: rope scaling type {kind!r} is not supported, only 'llama3'")
        else:
            scaling = {k: scaling[k] for k in LLAMA3_ROPE_KEYS if k in scaling}  # ModelArgs names a missing one
    args = ModelArgs(
        dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        vocab_size=cfg["vocab_size"], hidden_dim=cfg["intermediate_size"], norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta), rope_scaling=scaling, max_seq_len=cfg.get("max_position_embeddings", 2048),
        tie_embeddings=cfg.get("tie_word_embeddings", False), head_dim=cfg.get("head_dim"))

    # Only the model's own files: a folder may also hold drafters (hidden_transfer.safetensors ...).
    # Sharded checkpoints list their files in an index; a single file is model.safetensors.
    files, reader = _hf_weight_files(path, "model.safetensors"), _safetensors_load
    if not files:
        files, reader = _hf_weight_files(path, "pytorch_model.bin"), _torch_load
    if not files:
        raise FileNotFoundError(f"{path!r} has config.json but no model*.safetensors or pytorch_model*.bin")
    names = {}  # HF name pattern -> ours, with the layer index filled in
    for i in range(args.n_layers):
        names.update({hf.format(i=i): ours.format(i=i) for hf, ours in HF_NAMES.items()})
    state, source = {}, {}
    for file in files:
        for key, w in reader(file).items():
            if key.endswith("rotary_emb.inv_freq"):
                continue  # a buffer some old checkpoints saved; we compute it
            if key == "lm_head.weight" and args.tie_embeddings:
                continue  # the tied copy a plain torch.save of the state dict keeps (older .bin files)
            if key not in names:
                raise ValueError(f"{file}: unexpected tensor {key!r} for a {args.n_layers}-layer Llama")
            ours = names[key]
            if ours.endswith("wq.weight"):
                w = hf_to_meta_rope(w, args.n_heads)
            elif ours.endswith("wk.weight"):
                w = hf_to_meta_rope(w, args.n_kv_heads)
            state[ours], source[ours] = w, file
    # name what is missing as the files would: the reader is looking at Hugging Face names
    missing = [hf for hf, ours in names.items()
               if ours not in state and not (ours == "output.weight" and args.tie_embeddings)]
    if missing:
        raise ValueError(f"{path!r}: missing tensor(s) {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} "
                         f"in {', '.join(os.path.basename(f) for f in files)}")
    return args, state, source


def _hf_weight_files(path, name):
    index = os.path.join(path, name + ".index.json")
    if os.path.exists(index):
        return sorted({os.path.join(path, f) for f in _read_json(index)["weight_map"].values()})
    return [os.path.join(path, name)] if os.path.exists(os.path.join(path, name)) else []


def _load_meta_or_ours(path):
    params_file = os.path.join(path, "params.json")
    p = _read_json(params_file)
    shards = sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))
    ours = os.path.join(path, "model.safetensors")
    if not shards:  # this project's own format: ModelArgs fields verbatim
        if not os.path.exists(ours):
            raise FileNotFoundError(f"{path!r} has params.json but neither consolidated.*.pth nor model.safetensors")
        state = _safetensors_load(ours)
        try:
            args = ModelArgs(**p)
        except TypeError as e:
            raise ValueError(f"{params_file}: {e}") from None
        return args, state, {k: ours for k in state}

    parts = [_torch_load(f) for f in shards]
    state, source = {}, {}
    for key in parts[0]:
        if key == "rope.freqs":
            continue  # Llama 1/2 saved the RoPE table; we compute it
        ws = [part[key] for part in parts]
        name = key.split(".")[-2]
        axis = META_SHARD_AXIS.get(name)
        if name == "tok_embeddings":  # split along dim in Llama 2, along vocab in Llama 3
            axis = 1 if ws[0].shape[1] != p["dim"] else 0
        state[key] = ws[0] if len(ws) == 1 or axis is None else torch.cat(ws, dim=axis)
        source[key] = shards[0] if len(ws) == 1 else f"{path}/consolidated.*.pth"
    if "tok_embeddings.weight" not in state or "layers.0.feed_forward.w1.weight" not in state:
        raise ValueError(f"{shards[0]}: no tok_embeddings.weight / feed_forward weights, not a Meta Llama checkpoint")
    scaling = None
    if p.get("use_scaled_rope"):  # Llama 3.1+: fixed scaling constants in Meta's code
        scaling = {"factor": p.get("rope_scaling_factor", 8.0), "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    args = ModelArgs(
        dim=p["dim"], n_layers=p["n_layers"], n_heads=p["n_heads"], n_kv_heads=p.get("n_kv_heads") or p["n_heads"],
        # vocab_size is -1 in Llama 1/2's params.json, and the FFN width follows from
        # multiple_of / ffn_dim_multiplier: both are read off the weights instead
        vocab_size=state["tok_embeddings.weight"].shape[0],
        hidden_dim=state["layers.0.feed_forward.w1.weight"].shape[0],
        norm_eps=p.get("norm_eps", 1e-5), rope_theta=float(p.get("rope_theta", 10000.0)), rope_scaling=scaling,
        max_seq_len=p.get("max_seq_len", _meta_context(state, scaling)), tie_embeddings="output.weight" not in state)
    return args, state, source


def _meta_context(state, scaling):
    # params.json does not say how long a context the model was trained for: take the
    # release's own (Llama 1: 2048, Llama 2: 4096, Llama 3: 8192, 3.1+: 131072), told apart
    # by what the weights show, the shortest when in doubt
    if scaling is not None:
        return 131072
    if state["tok_embeddings.weight"].shape[0] >= 128000:
        return 8192
    return 2048


# GGUF (llama.cpp, Ollama): metadata key/values + tensors, many of them quantized.
GGUF_NAMES = {  # GGUF name -> ours, {i} = layer index
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
    "blk.{i}.attn_q.weight": "layers.{i}.attention.wq.weight",
    "blk.{i}.attn_k.weight": "layers.{i}.attention.wk.weight",
    "blk.{i}.attn_v.weight": "layers.{i}.attention.wv.weight",
    "blk.{i}.attn_output.weight": "layers.{i}.attention.wo.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.feed_forward.w1.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.feed_forward.w2.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.feed_forward.w3.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.attention_norm.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm.weight",
}


GGUFTensor = namedtuple("GGUFTensor", "name tensor_type shape data")  # shape: GGUF's order, fastest first
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_reader(file):
    """A .gguf file's (metadata {key: value}, tensors {name: GGUFTensor}); the tensors' data are
    views of the memory-mapped file, read when touched. Our own reading of the format (a header
    of typed key/value pairs, then tensor names, shapes, types and offsets, then the data,
    aligned): gguf.GGUFReader builds numpy objects for each of the ~100k strings of a
    vocabulary and its merges, seconds for SmolLM2, where this reads them in a tenth. The
    gguf package still supplies the quantization types and their dequantization."""
    import numpy as np
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        raise ImportError("reading .gguf files needs the gguf package: pip install gguf") from None
    buf, pos = np.empty(0, np.uint8), 0

    def take(fmt):
        nonlocal pos
        value = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return value

    def string():
        nonlocal pos
        n = take("Q")
        if pos + n > len(buf):
            raise EOFError(f"a string of {n} bytes at byte {pos}, past the end")
        pos += n
        return bytes(buf[pos - n:pos]).decode("utf-8")

    def value(kind):
        nonlocal pos
        if kind == _GGUF_STRING:
            return string()
        if kind != _GGUF_ARRAY:
            return take(_GGUF_SCALARS[kind])
        kind, n = take("I"), take("Q")
        if kind in (_GGUF_STRING, _GGUF_ARRAY):
            return [value(kind) for _ in range(n)]
        items = np.frombuffer(buf, "<" + _GGUF_SCALARS[kind], count=n, offset=pos)  # numbers: one read
        pos += items.nbytes
        return items.tolist()

    try:
        buf = np.memmap(file, mode="r").view(np.ndarray)  # (bytes,) uint8, read lazily
        magic, version = take("4s"), take("I")
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"magic {magic!r}, version {version}: not a GGUF v2/v3 file (little-endian)")
        n_tensors, n_fields = take("Q"), take("Q")
        meta = {}
        for _ in range(n_fields):
            key = string()
            meta[key] = value(take("I"))
        infos = []
        for _ in range(n_tensors):
            name, n_dims = string(), take("I")
            infos.append((name, [take("Q") for _ in range(n_dims)], GGMLQuantizationType(take("I")), take("Q")))
        start = pos + -pos % meta.get("general.alignment", 32)  # the data begin at the next aligned byte
        tensors = {}
        for name, shape, kind, offset in infos:
            block, block_bytes = GGML_QUANT_SIZES[kind]
            rows = math.prod(shape[1:])
            row_bytes = shape[0] // block * block_bytes
            begin = start + offset
            if begin + rows * row_bytes > len(buf):
                raise EOFError(f"tensor {name}'s data end past the end of the file")
            tensors[name] = GGUFTensor(name, kind, shape, buf[begin:begin + rows * row_bytes].reshape(rows, row_bytes))
    except (ValueError, EOFError, KeyError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {file} as GGUF ({type(e).__name__}: {e}); a truncated or damaged "
                         f"file? fetch it again") from None
    return meta, tensors


_GGUF_METADATA = {}  # (file, mtime) -> metadata: weights and tokenizer both need it


def gguf_metadata(file, reader=None):
    """{key: value} of a .gguf file's metadata (architecture, vocabulary, chat template ...)."""
    key = (os.path.abspath(file), os.path.getmtime(file))
    if key not in _GGUF_METADATA:
        _GGUF_METADATA.clear()  # one file at a time: a vocabulary can be megabytes
        _GGUF_METADATA[key] = (reader or gguf_reader(file))[0]
    return _GGUF_METADATA[key]


def _load_gguf(file):
    from gguf.quants import dequantize
    reader = gguf_reader(file)  # dropped when loading ends: it keeps the file's pages resident
    meta, tensors = gguf_metadata(file, reader), reader[1]
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{file}: architecture {arch!r} is not supported, only 'llama'")

    def get(key, default=None):
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise ValueError(f"{file}: metadata key llama.{key} is missing")
        return value

    n_heads = get("attention.head_count")
    head_dim = get("attention.key_length", get("embedding_length") // n_heads)
    if get("rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"{file}: rotary embeddings on {get('rope.dimension_count')} of {head_dim} head "
                         f"dimensions (partial RoPE) are not supported")
    args = ModelArgs(
        dim=get("embedding_length"), n_layers=get("block_count"), n_heads=n_heads,
        n_kv_heads=get("attention.head_count_kv", n_heads),
        vocab_size=meta.get("llama.vocab_size") or int(tensors["token_embd.weight"].shape[1]),
        hidden_dim=get("feed_forward_length"), norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(get("rope.freq_base", 10000.0)), max_seq_len=get("context_length"),
        tie_embeddings="output.weight" not in tensors, head_dim=head_dim,
        rope_scaling=_gguf_rope_scaling(file, meta, tensors, dequantize))

    names = {}
    for i in range(args.n_layers):
        names.update({g.format(i=i): ours.format(i=i) for g, ours in GGUF_NAMES.items()})
    state = {}
    for name, t in tensors.items():
        if name == "rope_freqs.weight":
            continue  # Llama 3.1's RoPE scaling, read into args.rope_scaling above
        if name not in names:
            raise ValueError(f"{file}: unexpected tensor {name!r} for a {args.n_layers}-layer Llama")
        # GGUF lists dimensions fastest-first: (in, out) for a weight that torch calls (out, in).
        # dequantize turns any block-quantized type (Q4_1, Q8_0, K-quants ...) into float32.
        w = dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape)])
        # No RoPE permutation here: llama.cpp's converter already permuted Hugging Face's
        # q/k rows (rotating halves) back to Meta's interleaved pairs, which is our layout.
        state[names[name]] = torch.from_numpy(w.copy() if not w.flags.writeable else w)
    return args, state, {k: file for k in state}


def _gguf_rope_scaling(file, meta, tensors, dequantize):
    """Llama 3.1's RoPE scaling: llama.cpp stores it as a tensor of per-frequency divisors
    (rope_freqs.weight), not as settings. Recover the settings and check they reproduce it."""
    kind = meta.get("llama.rope.scaling.type", "none")
    if kind not in ("none", "linear") or (kind == "linear" and meta.get("llama.rope.scaling.factor", 1.0) != 1.0):
        raise ValueError(f"{file}: rope scaling {kind!r} is not supported, only Llama 3.1's")
    if "rope_freqs.weight" not in tensors:
        return None
    t = tensors["rope_freqs.weight"]
    divisors = torch.from_numpy(dequantize(t.data, t.tensor_type).astype("float64")).flatten()
    old_len = meta.get("llama.rope.scaling.original_context_length", 8192)
    scaling = {"factor": float(divisors.max()), "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": old_len}
    probe = ModelArgs(head_dim=2 * divisors.numel(), rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)))
    plain = rope_frequencies(probe)
    scaled = rope_frequencies(ModelArgs(head_dim=probe.head_dim, rope_theta=probe.rope_theta, rope_scaling=scaling))
    if not torch.allclose(plain / scaled, divisors, rtol=1e-3):
        raise ValueError(f"{file}: rope_freqs.weight does not match Llama 3.1's scaling with factor "
                         f"{scaling['factor']}; this RoPE variant is not supported")
    return scaling


def _check_state(args, state, source, path):
    with torch.device("meta"):  # shapes only; no parameter depends on max_seq_len, the RoPE tables do (0.4 s at 128k)
        expected = {k: v.shape for k, v in Transformer(replace(args, max_seq_len=1)).state_dict().items()}
    if args.tie_embeddings:
        expected.pop("output.weight")
    for key in state:
        if key not in expected:
            raise ValueError(f"{source.get(key, path)}: unexpected tensor {key!r} "
                             f"(does the config match these weights?)")
        if state[key].shape != expected[key]:
            raise ValueError(f"{source.get(key, path)}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                             f"the config in {path!r} implies {tuple(expected[key])}")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{path!r}: missing tensor(s) {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''} in the weight files")


def __getattr__(name):
    # model.Tokenizer, the name callers know: the tokenizer itself lives in tokenizer.py
    if name == "Tokenizer":
        from tokenizer import Tokenizer
        return Tokenizer
    raise AttributeError(f"module 'model' has no attribute {name!r}")
