"""model.py against transformers' Llama, Meta checkpoints, the KV cache contract, loading errors, tokenizers."""
import base64
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]  # conftest.py puts it on sys.path
from decode import Sampler, generate_ar
from helpers import randomize, tiny_model
from model import ModelArgs, Tokenizer, Transformer

VOCAB = 96


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def tokens(B, T, seed=1, vocab=VOCAB):
    return torch.randint(3, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- transformers parity

def hf_llama(**overrides):
    """A random transformers LlamaForCausalLM (eager attention: an oracle independent of our SDPA call)."""
    transformers = pytest.importorskip("transformers")
    cfg = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5,
               attn_implementation="eager")
    torch.manual_seed(0)
    return randomize(transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**cfg, **overrides})))


# rope_theta 500000 with head_dim 16 and original_max_position_embeddings 64: the wavelengths
# 6.3 / 32 / 167+ fall in all three bands of the llama3 rule (kept / blended / divided by factor)
LLAMA3 = dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=500000.0,
              rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                original_max_position_embeddings=64))
CONFIGS = {
    "multi_head": dict(num_attention_heads=4, num_key_value_heads=4),
    "grouped_query": dict(num_attention_heads=8, num_key_value_heads=2),
    "tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "llama3_rope": LLAMA3,
    "head_dim_12": dict(hidden_size=120, num_attention_heads=10, num_key_value_heads=5),
    "explicit_head_dim": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=24),  # 4*24 != 64
}


@pytest.mark.parametrize("name", CONFIGS)
def test_hf_parity(tmp_path, name):
    """Logits of a transformers-saved Llama match transformers' to 1e-4, and 32 greedy tokens match its generate."""
    hf = hf_llama(**CONFIGS[name])
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(str(tmp_path))
    x = tokens(2, 64)
    assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)

    hf.generation_config.eos_token_id = None  # exactly 32 tokens: no early stop on a random EOS
    want = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=32,
                       pad_token_id=0)[:, x.shape[1]:]
    assert want.shape == (2, 32)
    for b in range(2):  # decode.py's plain loop: prefill, then one token per step on the KV cache
        assert generate_ar(ours, x[b].tolist(), 32, Sampler())[0] == want[b].tolist()


def test_bfloat16_parity(tmp_path):
    """In bfloat16, every RMSNorm gives transformers' bits (x is normalised in float32 and rounded
    once before the gain, as LlamaRMSNorm does: computed in bfloat16 it differs by several ulps),
    and the logits are as close to transformers' bfloat16 ones, and to float32's, as theirs are."""
    hf = hf_llama(**CONFIGS["grouped_query"])
    hf.save_pretrained(tmp_path)
    x = tokens(2, 64)
    want32 = hf(x).logits
    hf = hf.to(torch.bfloat16)
    ours = Transformer.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    norms = [(ours.norm, hf.model.norm)] + [
        pair for ob, hb in zip(ours.layers, hf.model.layers)
        for pair in ((ob.attention_norm, hb.input_layernorm), (ob.ffn_norm, hb.post_attention_layernorm))]
    h = (4 * torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    for a, b in norms:
        assert torch.equal(a(h), b(h))
    got, want = ours(x).float(), hf(x).logits.float()
    assert_close(got, want, atol=0.2, rtol=0)
    assert (got - want32).abs().mean() < 1.25 * (want - want32).abs().mean()


def top_level_rope(config):
    """Rewrite a transformers-5 config (rope_parameters) as published Llama 2/3 ones (rope_theta, rope_scaling)."""
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    return config


@pytest.mark.parametrize("name", ["llama3_rope", "grouped_query"])
def test_both_config_generations(tmp_path, name):
    """config.json with rope_parameters and with top-level rope_theta / rope_scaling load to transformers' logits."""
    hf = hf_llama(**{**CONFIGS[name], "rope_theta": 500000.0})
    new, old = tmp_path / "new", tmp_path / "old"
    hf.save_pretrained(new)
    config = json.loads((new / "config.json").read_text())
    assert "rope_parameters" in config and "rope_theta" not in config  # what transformers 5 writes
    shutil.copytree(new, old)
    (old / "config.json").write_text(json.dumps(top_level_rope(config)))
    x = tokens(2, 64)
    want = hf(x).logits
    for d in (new, old):
        assert_close(Transformer.from_pretrained(str(d))(x), want, atol=1e-4, rtol=0)


def test_sharded_safetensors(tmp_path):
    """Several model-XXXXX-of-YYYYY.safetensors with an index load as one model."""
    hf = hf_llama(**CONFIGS["grouped_query"])
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    x = tokens(2, 64)
    assert_close(Transformer.from_pretrained(str(tmp_path))(x), hf(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["grouped_query", "tied"])
def test_pytorch_model_bin(tmp_path, name):
    """pytorch_model-0000N-of-00002.bin shards and their index, as older transformers wrote them
    (tied lm_head.weight included)."""
    hf = hf_llama(**CONFIGS[name])
    hf.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = hf.state_dict()  # transformers 5 writes only safetensors: save the .bin files ourselves
    keys, weight_map = list(state), {}
    for i, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:])):
        file = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({k: state[k] for k in part}, tmp_path / file)
        weight_map |= {k: file for k in part}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    x = tokens(2, 64)
    assert_close(Transformer.from_pretrained(str(tmp_path))(x), hf(x).logits, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- Meta layout

def meta_to_hf_permute(w, n_heads):
    # verbatim from transformers' convert_llama_weights_to_hf.py
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def hf_to_meta_permute(w, n_heads):
    # Meta pairs dims (2i, 2i+1) of a head; HF pairs (i, i + hd/2): Meta row 2i is HF row i,
    # Meta row 2i+1 is HF row hd/2 + i
    hd = w.shape[0] // n_heads
    order = torch.arange(hd).view(2, hd // 2).t().reshape(-1)  # 0, hd/2, 1, hd/2+1, ...
    meta = w.view(n_heads, hd, -1)[:, order].reshape(w.shape)
    assert torch.equal(meta_to_hf_permute(meta, n_heads), w)  # really the inverse of HF's script
    return meta


META_NAMES = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
              "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
              "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3",
              "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
# Meta's model-parallel layers: ColumnParallelLinear splits dim 0, RowParallelLinear dim 1,
# Llama 2's ParallelEmbedding dim 1 (Llama 3's VocabParallelEmbedding dim 0); norms are replicated
META_SPLIT = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1}


def meta_state(hf):
    """transformers state dict -> Meta names and RoPE layout."""
    c = hf.config
    out = {"tok_embeddings.weight": hf.model.embed_tokens.weight, "norm.weight": hf.model.norm.weight,
           "output.weight": hf.lm_head.weight}
    for key, w in hf.model.layers.state_dict().items():  # "0.self_attn.q_proj.weight"
        i, module = key.split(".", 1)[0], key.split(".", 1)[1].removesuffix(".weight")
        name = META_NAMES[module]
        if name == "attention.wq":
            w = hf_to_meta_permute(w, c.num_attention_heads)
        elif name == "attention.wk":
            w = hf_to_meta_permute(w, c.num_key_value_heads)
        out[f"layers.{i}.{name}.weight"] = w
    return out


@pytest.mark.parametrize("shards, embedding_axis", [(1, None), (2, 1), (2, 0)])
def test_meta_checkpoint(tmp_path, shards, embedding_axis):
    """params.json + consolidated.NN.pth (1 or 2 model-parallel shards) load to transformers' logits."""
    # Meta's FFN width for dim 64, multiple_of 32: 2/3 * 4 * 64 = 170 -> 192
    hf = hf_llama(num_attention_heads=8, num_key_value_heads=2, intermediate_size=192, rope_theta=500000.0)
    state = meta_state(hf)
    split = {**META_SPLIT, "tok_embeddings": embedding_axis}
    for n in range(shards):
        part = {"rope.freqs": torch.zeros(4)}  # Llama 1/2 shards carry this table; it must be ignored
        for key, w in state.items():
            axis = split.get(key.split(".")[-2])
            part[key] = w.clone() if axis is None else w.chunk(shards, dim=axis)[n].clone()
        torch.save(part, tmp_path / f"consolidated.{n:02d}.pth")
    params = dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=-1, multiple_of=32,
                  ffn_dim_multiplier=None, norm_eps=1e-5, rope_theta=500000.0)
    (tmp_path / "params.json").write_text(json.dumps(params))
    x = tokens(2, 64)
    assert_close(Transformer.from_pretrained(str(tmp_path))(x), hf(x).logits, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- KV cache

SMALL = dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB, hidden_dim=96, max_seq_len=64)


def small_model(**kw):
    return tiny_model(dtype=torch.float32, **(SMALL | kw))


def test_cache_one_token_at_a_time():
    """Prefill + one token per step on the cache gives the full forward's logits."""
    model, x = small_model(), tokens(2, 12)
    cache = model.new_cache(batch_size=2, max_len=16)
    steps = [model(x[:, :4], cache=cache)]
    cache.commit()
    for t in range(4, 12):
        steps.append(model(x[:, t:t + 1], cache=cache))
        cache.commit()
    assert_close(torch.cat(steps, dim=1), model(x), atol=1e-5, rtol=0)


def test_cache_several_new_tokens():
    """5 new tokens on a non-empty cache give the same logits and cache as 5 single steps."""
    model, x = small_model(), tokens(2, 12)
    chunk, single = model.new_cache(batch_size=2, max_len=16), model.new_cache(batch_size=2, max_len=16)
    for cache in (chunk, single):
        model(x[:, :4], cache=cache)
        cache.commit()
    got = model(x[:, 4:9], cache=chunk)
    chunk.commit()
    want = []
    for t in range(4, 9):
        want.append(model(x[:, t:t + 1], cache=single))
        single.commit()
    assert_close(got, torch.cat(want, dim=1), atol=1e-5, rtol=0)
    assert chunk.length == single.length == 9
    assert_close(chunk.k[:, :, :, :9], single.k[:, :, :, :9], atol=1e-5, rtol=0)
    assert_close(chunk.v[:, :, :, :9], single.v[:, :, :, :9], atol=1e-5, rtol=0)


def test_explicit_causal_mask():
    """An explicit causal mask over [cached ; new] equals mask=None, and a non-causal one does not."""
    model, x = small_model(), tokens(2, 9)
    cache = model.new_cache(batch_size=2, max_len=16)
    model(x[:, :4], cache=cache)
    cache.commit()
    # new token i sits at position 4 + i and sees key slots 0..4+i
    causal = torch.arange(9)[None, :] <= torch.arange(4, 9)[:, None]  # (T=5, S=9)
    default = model(x[:, 4:], cache=cache)  # uncommitted: the next forward overwrites these slots
    assert_close(model(x[:, 4:], mask=causal, cache=cache), default, atol=0, rtol=0)
    assert not torch.allclose(model(x[:, 4:], mask=torch.ones(5, 9, dtype=torch.bool), cache=cache), default)
    assert_close(model(x, mask=causal.new_ones(9, 9).tril()), model(x), atol=0, rtol=0)


# A 5-node tree after a 6-token prompt: node 0 follows the prompt, 1 and 2 are its
# children, 3 is a child of 1 and 4 a child of 2. Path 0 -> 2 -> 4 is the one we accept.
PARENT, DEPTH, PATH, P = [-1, 0, 0, 1, 2], [0, 1, 1, 2, 2], [0, 2, 4], 6


def tree_mask():
    sees = torch.eye(5, dtype=torch.bool)
    for i, p in enumerate(PARENT):
        if p >= 0:
            sees[i] |= sees[p]  # a node sees itself and its ancestors
    return torch.cat([torch.ones(5, P, dtype=torch.bool), sees], dim=1)  # (T=5, S=P+5)


def test_commit_keeps_a_path():
    """After a tree forward, commit(keep=path) leaves the cache a plain forward over the path would."""
    model, prompt, tree = small_model(), tokens(1, P, seed=2), tokens(1, 5, seed=3)
    cache, ref = model.new_cache(max_len=16), model.new_cache(max_len=16)
    for c in (cache, ref):
        model(prompt, cache=c)
        c.commit()
    tree_logits = model(tree, pos=P + torch.tensor(DEPTH), mask=tree_mask(), cache=cache)
    cache.commit(keep=PATH)
    path_logits = model(tree[:, PATH], cache=ref)
    ref.commit()
    assert_close(tree_logits[:, PATH], path_logits, atol=1e-5, rtol=0)  # each node saw only its path
    n = P + len(PATH)
    assert cache.length == ref.length == n
    assert_close(cache.k[:, :, :, :n], ref.k[:, :, :, :n], atol=1e-5, rtol=0)
    assert_close(cache.v[:, :, :, :n], ref.v[:, :, :, :n], atol=1e-5, rtol=0)
    nxt = tokens(1, 2, seed=4)  # the rejected nodes are gone: the next tokens see prompt + path only
    assert_close(model(nxt, cache=cache), model(nxt, cache=ref), atol=1e-5, rtol=0)


def test_batched_3d_mask():
    """A (B, T, S) mask and (B, T) positions apply per row: row 0 a tree, row 1 a chain."""
    model, prompt, new = small_model(), tokens(2, P, seed=2), tokens(2, 5, seed=3)
    masks = torch.stack([tree_mask(), torch.arange(P + 5)[None, :] <= torch.arange(P, P + 5)[:, None]])
    pos = torch.stack([P + torch.tensor(DEPTH), P + torch.arange(5)])
    cache = model.new_cache(batch_size=2, max_len=16)
    model(prompt, cache=cache)
    cache.commit()
    got = model(new, pos=pos, mask=masks, cache=cache)
    for b in range(2):
        row = model.new_cache(max_len=16)
        model(prompt[b:b + 1], cache=row)
        row.commit()
        assert_close(got[b:b + 1], model(new[b:b + 1], pos=pos[b], mask=masks[b], cache=row), atol=1e-5, rtol=0)


def test_commit_when_block_0_is_skipped():
    """A forward that skips block 0 (self-spec's draft model) still leaves its new tokens pending:
    the lowest block a forward runs counts them."""
    model, x = small_model(), tokens(1, 7)
    cache, ref = model.new_cache(max_len=16), model.new_cache(max_len=16)
    h = model.embed(x[:, :4])
    model.run_blocks(h, torch.arange(4), None, cache, start=1)  # blocks 1..L-1 only
    assert cache.pending == 4
    cache.commit()
    model.run_blocks(h, torch.arange(4), None, ref, start=1)
    ref.commit(range(4))
    assert cache.length == ref.length == 4
    assert_close(cache.k[1:, :, :, :4], ref.k[1:, :, :, :4], atol=0, rtol=0)


def test_commit_of_the_first_new_tokens():
    """commit(keep) of the first new tokens (a chain's accepted path) keeps them where they are:
    the cache is a plain forward's over the tokens kept."""
    model, x = small_model(), tokens(1, 9)
    cache, ref = model.new_cache(max_len=16), model.new_cache(max_len=16)
    model(x[:, :4], cache=cache)
    cache.commit()
    model(x[:, 4:], cache=cache)  # 5 new tokens, causal: as a plain forward would see them
    cache.commit([0, 1, 2])
    model(x[:, :7], cache=ref)
    ref.commit()
    assert cache.length == ref.length == 7 and cache.pending == 0
    assert_close(cache.k[:, :, :, :7], ref.k[:, :, :, :7], atol=1e-5, rtol=0)
    assert_close(cache.v[:, :, :, :7], ref.v[:, :, :, :7], atol=1e-5, rtol=0)
    nxt = tokens(1, 2, seed=4)  # the two dropped entries are forgotten
    assert_close(model(nxt, cache=cache), model(nxt, cache=ref), atol=1e-5, rtol=0)


def test_cache_grows_without_max_len():
    """new_cache() without max_len allocates a few slots and doubles them as writes need, up to the
    context; the entries written so far survive every growth, and past the context it refuses."""
    model = small_model(max_seq_len=600)
    x = tokens(1, 600, vocab=VOCAB)
    cache = model.new_cache()
    assert cache.k.shape[3] == 256 and cache.max_len == 600  # not the whole context up front
    steps = [model(x[:, :200], cache=cache)]
    cache.commit()
    for t in range(200, 600, 100):
        steps.append(model(x[:, t:t + 100], cache=cache))
        cache.commit()
    assert cache.k.shape[3] == 600 and cache.length == 600
    assert_close(torch.cat(steps, 1), model(x), atol=1e-4, rtol=0)
    with pytest.raises(RuntimeError, match="KV cache overflow"):
        cache.write(0, cache.k[0, :, :, :1], cache.v[0, :, :, :1])
    with pytest.raises(ValueError, match="beyond max_seq_len=600"):
        model(x[:, :1], cache=cache)


@pytest.mark.parametrize("missing", ["factor", "low_freq_factor", "high_freq_factor",
                                     "original_max_position_embeddings"])
def test_llama3_rope_scaling_missing_a_key(missing):
    scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=64)
    del scaling[missing]
    with pytest.raises(ValueError, match=f"rope_scaling .* lacks {missing}"):
        ModelArgs(rope_scaling=scaling)


# ----------------------------------------------------------------------------- our own format

@pytest.mark.parametrize("tied", [False, True])
def test_own_format_round_trip(tmp_path, tied):
    """save_pretrained -> from_pretrained gives the same args, the same logits and the same tying."""
    model, x = small_model(tie_embeddings=tied), tokens(2, 16)
    model.save_pretrained(str(tmp_path))
    loaded = Transformer.from_pretrained(str(tmp_path))
    assert loaded.args == model.args and not loaded.training
    assert torch.equal(loaded(x), model(x))
    # a tied table is stored once: blocked on a CPU, the embedding reads the LM head's blocks
    assert loaded.num_params() == model.num_params()
    plain = Transformer.from_pretrained(str(tmp_path), blocked=False)
    assert (plain.output.weight is plain.tok_embeddings.weight) == tied


@pytest.mark.parametrize("tied", [False, True])
def test_blocked_weights_keep_their_values(tmp_path, tied):
    """from_pretrained stores every linear weight in column blocks on a CPU (BlockedLinear,
    faster few-token passes): block j, entry (c, r) is W[jB + r, c], checked entry by entry; the
    products equal F.linear's for 1..33 and 300 tokens (a long pass) and batches; the state_dict
    and what save_pretrained writes are unchanged, and a tied table's rows are the embeddings."""
    from safetensors.torch import load_file
    from model import BlockedLinear
    model = small_model(tie_embeddings=tied)
    model.save_pretrained(str(tmp_path / "a"))
    loaded = Transformer.from_pretrained(str(tmp_path / "a"))
    dense = dict(model.named_modules())
    blocked = {name: m for name, m in loaded.named_modules() if isinstance(m, BlockedLinear)}
    # every linear whose out features 16 divides; the others (wk, wv: 24 here) keep nn.Linear
    assert blocked.keys() == {name for name, m in model.named_modules()
                              if isinstance(m, torch.nn.Linear) and m.out_features % 16 == 0}
    assert any(type(m) is torch.nn.Linear for m in loaded.modules())
    for name, m in blocked.items():
        w, B = dense[name].weight, m.block
        for j, c, r in [(0, 0, 1), (1, 2, 3), (m.blocks.shape[0] - 1, w.shape[1] - 1, B - 1)]:
            assert m.blocks[j, c, r] == w[j * B + r, c], name
        assert torch.equal(m.weight, w), name
        for shape in [(1, w.shape[1]), (2, 33, w.shape[1]), (5, w.shape[1]), (3, 100, w.shape[1])]:
            x = torch.randn(shape, dtype=w.dtype)
            assert_close(m(x), F.linear(x, w), atol=1e-5, rtol=1e-5)
    ids = tokens(2, 16)
    assert torch.equal(loaded.embed(ids), model.embed(ids))
    # the same state_dict, but a tied table once, as output.weight (save_pretrained writes it as before)
    ours, want = loaded.state_dict(), model.state_dict()
    assert ours.keys() == want.keys() - ({"tok_embeddings.weight"} if tied else set())
    assert all(torch.equal(ours[name], want[name]) for name in ours)
    loaded.save_pretrained(str(tmp_path / "b"))
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_close(loaded(ids), model(ids), atol=1e-5, rtol=0)
    # bfloat16 keeps nn.Linear: its CPU kernels are other ones (compute-bound without avx512_bf16)
    bf16 = Transformer.from_pretrained(str(tmp_path / "a"), dtype=torch.bfloat16)
    assert not any(isinstance(m, BlockedLinear) for m in bf16.modules())


@pytest.mark.parametrize("n", [1, 7, 255, 256, 600])
def test_blocked_matmul_short_and_long_passes(n):
    """blocked_matmul equals F.linear, and so do the gradients it passes back (a drafter trained on a
    model loaded blocked, as in notebook 05, backpropagates through it), below and at/above the length
    where it switches to rebuilding W 64 blocks at a time: 130 blocks here, so chunks of 64, 64 and 2."""
    from model import blocked_matmul
    W = torch.randn(130 * 16, 24, dtype=torch.float64)
    blocks = W.reshape(130, 16, 24).mT.contiguous()             # (out/B, in, B), as BlockedLinear stores it
    x = torch.randn(1, n, 24, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():  # this module's tests run without gradients
        y = blocked_matmul(x, blocks)
    assert y.shape == (1, n, 130 * 16)
    assert_close(y, F.linear(x, W), atol=1e-12, rtol=0)
    g = torch.randn_like(y)
    assert_close(torch.autograd.grad(y, x, g)[0], g @ W, atol=1e-12, rtol=0)


def native_kernel_or_skip():
    from model import native_kernel
    kernel = native_kernel()
    if kernel is None:
        if os.environ.get("HT_REQUIRE_NATIVE_KERNEL") == "1":  # CI's machines have gcc and AVX2: absent is a failure
            pytest.fail("blocked_matmul.c was not built (see the warning), and HT_REQUIRE_NATIVE_KERNEL=1")
        pytest.skip("blocked_matmul.c cannot run here (not an AVX2 CPU, or no C compiler)")
    return kernel


@pytest.mark.parametrize("n_in, n_blocks", [(24, 7), (576, 37), (1537, 4)])
def test_native_kernel_products(n_in, n_blocks):
    """blocked_matmul.c, through blocked_matmul: every tile shape (1-2 rows x 3 blocks, 3-4 rows x 2,
    groups of up to 5 rows x 1, a narrower last tile) gives the product to float32 rounding; each token's
    outputs come out bit for bit the same alone as beside any others (one sum, in one order, whatever
    the pass); a product autograd must see (a drafter's training) goes to torch, gradients and all."""
    import model
    native_kernel_or_skip()
    g = torch.Generator().manual_seed(n_in)
    blocks = torch.randn(n_blocks, n_in, 16, generator=g)      # (out/B, in, B), as BlockedLinear stores it
    W = blocks.double().mT.reshape(n_blocks * 16, n_in)         # (out, in)
    x = torch.randn(40, n_in, generator=g)
    alone = model.blocked_matmul(x, blocks)                     # (40, out): 40 rows, groups of 5
    for i in range(40):
        assert torch.equal(model.blocked_matmul(x[i:i + 1], blocks)[0], alone[i]), i
    for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 16, 17, 33]:
        y = model.blocked_matmul(x[:n], blocks)
        # within float32 rounding of a sum of n_in products (a layout slip is off by whole products)
        assert ((y.double() - x[:n].double() @ W.T).abs() <= 1e-5 * (x[:n].double().abs() @ W.abs().T)).all(), n
        assert torch.equal(y, alone[:n]), n
        assert torch.equal(model.blocked_matmul(x[None, 40 - n:], blocks)[0], alone[40 - n:]), n  # (B, T, in)
    assert model.blocked_matmul(x[:0], blocks).shape == (0, n_blocks * 16)  # no rows: no call to the kernel
    calls = []
    real = model.native_kernel
    try:
        model.native_kernel = lambda: calls.append(1) or real()
        model.blocked_matmul(x[:3], blocks)
        assert calls == [1]
        xg = x[:3].clone().requires_grad_()
        with torch.enable_grad():
            y = model.blocked_matmul(xg, blocks)
        assert calls == [1] and y.requires_grad
        out = torch.randn_like(y)
        assert_close(torch.autograd.grad(y, xg, out)[0].double(), out.double() @ W, atol=1e-4, rtol=1e-5)
    finally:
        model.native_kernel = real


def test_native_kernel_at_7b_sizes():
    """A Llama-2-7B down projection (4096 x 11008, 180 MB in float32) through blocked_matmul.c for a
    tree's 7 tokens and one: the first, a middle and the last block's outputs against float64, and
    the single token's outputs bit for bit its row of the 7-token pass."""
    import model
    native_kernel_or_skip()
    g = torch.Generator().manual_seed(7)
    blocks = torch.randn(4096 // 16, 11008, 16, generator=g)      # (out/B, in, B)
    x = torch.randn(7, 11008, generator=g)
    y = model.blocked_matmul(x, blocks)                            # (7, 4096)
    assert torch.equal(model.blocked_matmul(x[3:4], blocks)[0], y[3])
    for j in (0, 131, 255):
        want = x.double() @ blocks[j].double()                     # (7, 16): outputs 16j..16j+15
        bound = 1e-5 * (x.double().abs() @ blocks[j].double().abs())
        assert ((y[:, 16 * j:16 * j + 16].double() - want).abs() <= bound).all(), j


@pytest.mark.parametrize("case", ["no compiler", "a failed build", "no cache folder"])
def test_native_kernel_that_cannot_be_built(monkeypatch, tmp_path, case):
    """No C compiler, a compiler that fails, a cache folder that cannot be made: a warning that names
    the fix, and torch does the products, the same ones."""
    import model
    native_kernel_or_skip()
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CC", {"no compiler": str(tmp_path / "no-such-cc"), "a failed build": "false"}.get(case, "cc"))
    # no build of an earlier run to find; "no cache folder": a file stands where the folder would go
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ("a-file" if case == "no cache folder" else "cache")))
    model.native_kernel.cache_clear()
    try:
        with pytest.warns(UserWarning, match="Install a C compiler"):
            assert model.native_kernel() is None
        blocks, x = torch.randn(5, 24, 16), torch.randn(3, 24)
        assert_close(model.blocked_matmul(x, blocks), x @ blocks.mT.reshape(80, 24).T)
    finally:
        monkeypatch.undo()
        model.native_kernel.cache_clear()
    assert model.native_kernel() is not None  # built again (or found) with the real compiler


def test_fused_blocks_compute_what_the_separate_products_do(tmp_path):
    """Blocked, wq/wk/wv and w1/w3 become one product each (Attention.wqkv, FeedForward.w13): the
    parts' blocks are views of the fused tensor (weights in memory once, parameters and state_dict
    unchanged), and every block's output equals the one the separate products give, entry by entry."""
    from model import BlockedLinear
    model = small_model(n_kv_heads=4, tie_embeddings=True)  # wk, wv: 48 out features, all blocked
    model.save_pretrained(str(tmp_path))
    loaded = Transformer.from_pretrained(str(tmp_path))
    assert loaded.num_params() == model.num_params()
    assert loaded.state_dict().keys() == model.state_dict().keys() - {"tok_embeddings.weight"}
    x, pos = torch.randn(2, 9, 48), torch.arange(9)
    for layer in loaded.layers:
        att, ff = layer.attention, layer.feed_forward
        start = att.wqkv.data_ptr()
        for w in (att.wq, att.wk, att.wv):
            assert w.blocks.data_ptr() == start and isinstance(w, BlockedLinear)
            start += w.blocks.numel() * w.blocks.element_size()
        assert ff.w1.blocks.data_ptr() == ff.w13.data_ptr()
        assert ff.w3.blocks.data_ptr() == ff.w13[ff.w1.blocks.shape[0]:].data_ptr()
    fused = loaded.run_blocks(x, pos, return_all=True)
    for layer in loaded.layers:
        layer.attention.wqkv = layer.feed_forward.w13 = None  # back to three and two products
    separate = loaded.run_blocks(x, pos, return_all=True)
    for a, b in zip(fused, separate):
        assert_close(a, b, atol=1e-6, rtol=0)
    assert_close(fused[-1], model.run_blocks(x, pos), atol=1e-5, rtol=0)
    # wk, wv with 24 out features stay nn.Linear: no fused q/k/v, but w1/w3 still fuse
    small = small_model()
    small.save_pretrained(str(tmp_path / "b"))
    b = Transformer.from_pretrained(str(tmp_path / "b"))
    assert all(L.attention.wqkv is None and L.feed_forward.w13 is not None for L in b.layers)
    assert_close(b(tokens(2, 8)), small(tokens(2, 8)), atol=1e-5, rtol=0)


def test_rope_turns_each_pair_by_its_angle():
    """apply_rope (a complex product) and rotate_pairs (the same product in reals, MPS's path) turn
    dims (2i, 2i+1) of each head by angle m * theta_i, checked against a hand-built 2x2 rotation,
    for float32 and bfloat16 inputs."""
    from model import apply_rope, rotate_pairs
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=g)  # (B, H, T, hd)
    angle = torch.randn(1, 1, 5, 4, generator=g)  # (1, 1, T, hd/2)
    want = torch.empty_like(x)
    for i in range(4):
        c, s = angle[..., i].cos(), angle[..., i].sin()
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        want[..., 2 * i], want[..., 2 * i + 1] = a * c - b * s, a * s + b * c
    assert_close(apply_rope(x, angle.cos(), angle.sin()), want, atol=1e-6, rtol=0)
    assert_close(rotate_pairs(x.unflatten(-1, (-1, 2)), angle.cos(), angle.sin()).flatten(-2), want, atol=1e-6, rtol=0)
    got = apply_rope(x.bfloat16(), angle.cos(), angle.sin())
    want_bf16 = apply_rope(x.bfloat16().float(), angle.cos(), angle.sin()).bfloat16()  # computed in float32
    assert got.dtype == torch.bfloat16 and torch.equal(got, want_bf16)


def test_bfloat16_load(tmp_path):
    """dtype=bfloat16 gives a bf16 model (and cache) whose logits stay close to float32's."""
    model, x = small_model(tie_embeddings=True), tokens(2, 16)
    model.save_pretrained(str(tmp_path))
    bf = Transformer.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf.parameters())
    got = bf(x)
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), model(x), atol=0.1, rtol=0.05)
    cache = bf.new_cache(batch_size=2, max_len=16)
    assert_close(bf(x, cache=cache).float(), got.float(), atol=0.1, rtol=0.05)


# ----------------------------------------------------------------------------- loading errors
#
# Each bad input gets its own error, naming the file and, where there is one, the tensor.

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    hf_llama(**CONFIGS["grouped_query"]).save_pretrained(d)
    return d


@pytest.fixture
def bad(tmp_path, hf_dir):
    """A fresh copy of a good transformers checkpoint, to break."""
    shutil.copytree(hf_dir, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def edit_config(d, **changes):
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, **changes}))


def edit_weights(d, edit):
    from safetensors.torch import load_file, save_file
    state = load_file(d / "model.safetensors")
    edit(state)
    save_file(state, d / "model.safetensors")


def load(d):
    return Transformer.from_pretrained(str(d))


def test_error_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope")


def test_error_no_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither config.json .*params.json"):
        load(tmp_path)


def test_error_not_llama(bad):
    edit_config(bad, model_type="mistral")
    with pytest.raises(ValueError, match="model_type 'mistral' is not supported"):
        load(bad)


YARN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32)


@pytest.mark.parametrize("rope", [dict(rope_parameters={**YARN, "rope_theta": 10000.0}),
                                  dict(rope_parameters=None, rope_theta=10000.0, rope_scaling=YARN)])
def test_error_rope_scaling_type(bad, rope):
    edit_config(bad, **rope)
    with pytest.raises(ValueError, match="rope scaling type 'yarn' is not supported"):
        load(bad)


def test_error_no_weight_files(bad):
    (bad / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has config.json but no model"):
        load(bad)


def test_error_missing_tensor(bad):
    edit_weights(bad, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor\(s\) model\.layers\.1\.mlp\.up_proj\.weight in model\.safetensors"):
        load(bad)


def test_error_unexpected_tensor(bad):
    edit_weights(bad, lambda s: s.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}))
    with pytest.raises(ValueError, match=r"model\.safetensors: unexpected tensor "
                                         r"'model\.layers\.0\.self_attn\.q_proj\.bias'"):
        load(bad)


def test_error_wrong_shape(bad):
    edit_config(bad, intermediate_size=80)  # the files hold 96
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'layers\.\d\.feed_forward\.w[123]\.weight' "
                                         r"has shape \((96, 64|64, 96)\), the config .* implies \((80, 64|64, 80)\)"):
        load(bad)


def test_error_malformed_json(bad):
    (bad / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load(bad)


def test_error_truncated_safetensors(bad):
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"cannot read weights from {re.escape(str(f))}"):
        load(bad)


def test_error_meta_without_pth(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(dict(dim=64, n_layers=2, n_heads=8, vocab_size=-1)))
    with pytest.raises(FileNotFoundError, match=r"has params\.json but neither consolidated\.\*\.pth"):
        load(tmp_path)


# ----------------------------------------------------------------------------- tokenizers

TEXT = "To be, or not to be: that is the question."


def test_sentencepiece_tokenizer(tmp_path):
    """The project's sentencepiece model: BOS=1 first, EOS=2, and decode inverts encode."""
    shutil.copy(ROOT / "checkpoints" / "shakespeare" / "tokenizer.model", tmp_path)
    tok = Tokenizer(str(tmp_path))
    ids = tok.encode(TEXT)
    assert ids[0] == tok.bos_id == 1 and 1 not in ids[1:]
    assert tok.encode(TEXT, bos=False) == ids[1:]
    assert tok.decode(ids[1:]) == TEXT
    assert tok.eos_ids == {2}


def bpe_tokenizer_json(d):
    """A tiny byte-level BPE with Llama 3's special tokens, trained here; returns the tokenizers object."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tk.train_from_iterator([TEXT, "Whether 'tis nobler in the mind to suffer"] * 10, trainer)
    tk.save(str(d / "tokenizer.json"))
    return tk


@pytest.mark.parametrize("source", ["generation_config", "tokenizer_config"])
def test_tokenizer_json(tmp_path, source):
    """tokenizer.json loads through tokenizers, with BOS/EOS from generation_config.json or tokenizer_config.json."""
    pytest.importorskip("tokenizers")
    tk = bpe_tokenizer_json(tmp_path)
    bos, eos, eot = (tk.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
    if source == "generation_config":
        (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": [eos, eot]}))
        want_eos = {eos, eot}
    else:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(
            {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}}))
        want_eos = {eot}
    tok = Tokenizer(str(tmp_path))
    ids = tok.encode(TEXT, bos=True)  # (when BOS comes by default: test_gguf.py, test_smollm2.py)
    assert ids == [bos] + tk.encode(TEXT, add_special_tokens=False).ids
    assert tok.decode(ids[1:]) == TEXT
    assert tok.bos_id == bos and tok.eos_ids == want_eos


def write_tiktoken_model(d):
    # Llama 3's tokenizer.model: text lines "base64(token bytes) rank", not a protobuf
    lines = [f"{base64.b64encode(bytes([b])).decode()} {rank}" for rank, b in enumerate(range(33, 127))]
    (d / "tokenizer.model").write_text("\n".join(lines) + "\n")


def test_tiktoken_model_beside_tokenizer_json(tmp_path):
    """A tiktoken tokenizer.model is recognised by content, and tokenizer.json is used instead."""
    pytest.importorskip("tokenizers")
    write_tiktoken_model(tmp_path)
    tk = bpe_tokenizer_json(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                                "eos_token": "<|end_of_text|>"}))
    tok = Tokenizer(str(tmp_path))
    assert tok.encode(TEXT, bos=False) == tk.encode(TEXT, add_special_tokens=False).ids
    assert tok.bos_id == tk.token_to_id("<|begin_of_text|>")


def test_tiktoken_model_alone(tmp_path):
    """A tiktoken tokenizer.model without tokenizer.json is refused with a pointer to tokenizer.json."""
    write_tiktoken_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="needs the tokenizer.json"):
        Tokenizer(str(tmp_path))
