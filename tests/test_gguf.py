"""GGUF files written here as llama.cpp's converter writes them: tiny Llamas in F32, F16, Q8_0 and
Q4_1 against transformers' reading of the same file, the two vocabulary families, Llama 3.1's
rope_freqs, the errors; then the folder regressions of issue 11 and the BOS/EOS conventions of
every tokenizer format."""
import functools
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import regex
import sentencepiece
import torch
import transformers
from gguf import GGMLQuantizationType
from torch.testing import assert_close

import decode
from decode import Sampler, generate_ar
from helpers import randomize
from model import ModelArgs, Tokenizer, Transformer
from transfer import load_drafter, new_drafter, save_drafter

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE_SPM = ROOT / "checkpoints" / "shakespeare" / "tokenizer.model"


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


# ----------------------------------------------------------------------------- a tiny "gpt2" vocabulary

CORPUS = ["To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n",
          "def area(r):\n    return 3.14159 * r ** 2  # 2024 values 1234567\n",
          "  indented   spaces\t\ttabs 42 1000000 x2 v10 <think>"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]  # ids 0..3
EOS, BOS, EOT, USER_DEFINED = 0, 1, 2, 3
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@functools.lru_cache(maxsize=1)
def gpt2_vocab():
    """(tokens, merges, token types) of a byte-level BPE trained here, as llama.cpp stores them.
    Trained on GPT-2's split, so it holds digit merges ("42", "Ġ1000000") that a Digits
    pre-tokenizer must keep from applying."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIAL)
    tk.train_from_iterator(CORPUS * 20, trainer)
    tokens = [t for t, _ in sorted(tk.get_vocab().items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in json.loads(tk.to_str())["model"]["merges"]]
    # llama.cpp token types: 1 normal, 3 control (special tokens), 4 user-defined (added, not special)
    types = [3 if t in SPECIAL[:3] else 4 if t == "<think>" else 1 for t in tokens]
    assert tokens[:4] == SPECIAL and {"42", "Ġ1000000"} <= set(tokens)
    return tokens, merges, types


def add_gpt2_vocab(w, pre="smollm", add_bos=False, eot=True):
    """The vocabulary's metadata, as llama.cpp's converter writes it (add_bos None: no such key)."""
    tokens, merges, types = gpt2_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    if eot:
        w.add_eot_token_id(EOT)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.add_chat_template(CHAT_TEMPLATE)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ----------------------------------------------------------------------------- llama.cpp's converter

def llama_cpp_permute(weights, n_head, n_head_kv):
    # verbatim from llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute): Hugging Face's
    # rotating halves back to Meta's interleaved pairs, k with the kv heads
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


GGUF_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.down_proj": "ffn_down",
              "mlp.up_proj": "ffn_up", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf_name):
    module = hf_name.removesuffix(".weight")
    if module in GGUF_NAMES:
        return GGUF_NAMES[module] + ".weight"
    _, _, i, rest = module.split(".", 3)  # model.layers.{i}.self_attn.q_proj
    return f"blk.{i}.{GGUF_NAMES[rest]}.weight"


def add_tensor(w, name, array, qtype):
    qtype = GGMLQuantizationType[qtype]
    data = gguf.quants.quantize(array.astype(np.float32), qtype)
    if data.dtype == np.uint8:  # block-quantized: bytes, with the float shape given alongside
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    else:
        w.add_tensor(name, data)


def write_llama_gguf(file, hf, qtype="F32", arch="llama", rope_freqs=None, kv=None, alignment=None, **vocab):
    """transformers Llama -> .gguf as llama.cpp writes one: llama.* metadata, q/k permuted to Meta's
    pairs, matrices in `qtype` and norms in F32. Q4_1 files keep the embedding in Q8_0, as
    SmolLM2's does. kv: extra {key: (writer method, value)}; alignment: of the data (default 32)."""
    c = hf.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w = gguf.GGUFWriter(str(file), arch)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("tiny llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))  # transformers 5's config
    if head_dim != c.hidden_size // c.num_attention_heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(c.vocab_size)
    for key, (method, value) in (kv or {}).items():
        getattr(w, method)(key, value)
    add_gpt2_vocab(w, **vocab)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # tied: the file holds token_embd only
        a = t.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            a = llama_cpp_permute(a, c.num_attention_heads, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = llama_cpp_permute(a, c.num_attention_heads, c.num_key_value_heads)
        q = "F32" if a.ndim == 1 else "Q8_0" if qtype == "Q4_1" and name == "model.embed_tokens.weight" else qtype
        add_tensor(w, gguf_name(name), a, q)
    finish(w)
    return file


def hf_llama(**overrides):
    """A random transformers Llama with GQA, O(1) weights, and the tiny vocabulary's size."""
    cfg = dict(vocab_size=len(gpt2_vocab()[0]), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
               attn_implementation="eager")
    torch.manual_seed(0)
    return randomize(transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**cfg, **overrides})))


def hf_read_gguf(file):
    """transformers' own reading of the file (its dequantizer, its un-permutation), eager attention."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(file.parent), gguf_file=file.name, dtype=torch.float32, attn_implementation="eager").eval()


def tokens(B, T, seed=1):
    return torch.randint(4, len(gpt2_vocab()[0]), (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- weights

CASES = {  # name: (qtype, transformers config overrides)
    "F32-untied": ("F32", {}), "F32-tied": ("F32", dict(tie_word_embeddings=True)),
    "F16-untied": ("F16", {}), "F16-tied": ("F16", dict(tie_word_embeddings=True)),
    "Q8_0-untied": ("Q8_0", {}), "Q8_0-tied": ("Q8_0", dict(tie_word_embeddings=True)),
    "Q4_1-untied": ("Q4_1", {}), "Q4_1-tied": ("Q4_1", dict(tie_word_embeddings=True)),
    "F32-explicit-head-dim": ("F32", dict(head_dim=24)),  # 4 heads x 24 != 64: attention.key_length
}


@pytest.mark.parametrize("case", CASES)
def test_gguf_matches_transformers(tmp_path, case):
    """Logits within 1e-4 of transformers' reading of the same file over 40 positions, and 24 greedy
    tokens identical to its generate; F32 files also give the source model's logits."""
    qtype, overrides = CASES[case]
    hf = hf_llama(**overrides)
    file = write_llama_gguf(tmp_path / "tiny.gguf", hf, qtype)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(file)).tensors}
    assert types["blk.0.attn_q.weight"] == qtype and types["blk.0.attn_norm.weight"] == "F32"
    assert ("output.weight" in types) == (not hf.config.tie_word_embeddings)

    ours = Transformer.from_pretrained(str(file))
    ref = hf_read_gguf(file)
    assert ours.args.tie_embeddings == ref.config.tie_word_embeddings == hf.config.tie_word_embeddings
    assert (ours.args.n_heads, ours.args.n_kv_heads, ours.args.head_dim) == (4, 2, overrides.get("head_dim", 16))
    x = tokens(2, 40)
    logits = ours(x)
    assert_close(logits, ref(x).logits, atol=1e-4, rtol=0)
    if qtype == "F32":  # the file holds the source model exactly: the layout round trip is right
        assert_close(logits, hf(x).logits, atol=1e-4, rtol=0)

    ref.generation_config.eos_token_id = None  # exactly 24 tokens: no early stop on a random EOS
    want = ref.generate(x[:, :8], attention_mask=torch.ones(2, 8, dtype=torch.long), do_sample=False,
                        max_new_tokens=24, pad_token_id=0)[:, 8:]
    assert want.shape == (2, 24)
    for b in range(2):
        assert generate_ar(ours, x[b, :8].tolist(), 24, Sampler())[0] == want[b].tolist()


@pytest.mark.parametrize("qtype", ["F16", "Q4_1"])
def test_our_reading_of_the_format_is_gguf_readers(tmp_path, qtype):
    """model.gguf_reader (our header parser) against gguf.GGUFReader on the same file: every
    metadata value with its Python type (every scalar type, arrays of numbers, strings and bools,
    the vocabulary and merges) and every tensor's type, shape and bytes, with a non-default
    alignment of the data."""
    from model import gguf_reader
    kv = {"test.u8": ("add_uint8", 7), "test.i8": ("add_int8", -7), "test.u16": ("add_uint16", 65000),
          "test.i16": ("add_int16", -3000), "test.u32": ("add_uint32", 4_000_000_000), "test.i32": ("add_int32", -5),
          "test.u64": ("add_uint64", 2**40), "test.i64": ("add_int64", -2**40), "test.f32": ("add_float32", 0.1),
          "test.f64": ("add_float64", 0.1), "test.bool": ("add_bool", True), "test.str": ("add_string", "é ☃"),
          "test.floats": ("add_array", [0.5, -1.25]), "test.bools": ("add_array", [True, False]),
          "test.strings": ("add_array", ["a", "", "ü"])}
    file = write_llama_gguf(tmp_path / "a.gguf", hf_llama(tie_word_embeddings=True), qtype, kv=kv, alignment=64)
    meta, tensors = gguf_reader(str(file))
    theirs = gguf.GGUFReader(str(file))
    want = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}  # their own 3 extras
    assert meta.keys() == want.keys() and meta["general.alignment"] == 64
    for key, value in want.items():
        assert meta[key] == value and type(meta[key]) is type(value), key
        if isinstance(value, list) and value:
            assert type(meta[key][0]) is type(value[0]), key
    assert meta["test.f32"] == float(np.float32(0.1)) and meta["test.strings"] == ["a", "", "ü"]
    assert tensors.keys() == {t.name for t in theirs.tensors}
    for t in theirs.tensors:
        ours = tensors[t.name]
        assert ours.tensor_type == t.tensor_type and ours.shape == [int(n) for n in t.shape], t.name
        raw = lambda a: np.asarray(a).reshape(-1).view(np.uint8)
        assert np.array_equal(raw(ours.data), raw(t.data)), t.name


def test_folder_holding_one_gguf_and_drafters(tmp_path):
    """A folder with one .gguf (and drafter files beside it) loads like the file itself, weights and tokenizer."""
    hf = hf_llama()
    file = write_llama_gguf(tmp_path / "tiny.gguf", hf, "Q8_0")
    by_file = Transformer.from_pretrained(str(file))
    save_drafter(new_drafter("hidden-transfer", by_file, 2, 1), by_file, str(tmp_path / "hidden_transfer.safetensors"))
    by_folder = Transformer.from_pretrained(str(tmp_path))
    x = tokens(1, 16)
    assert torch.equal(by_folder(x), by_file(x))
    assert Tokenizer(str(tmp_path)).encode(CORPUS[0]) == Tokenizer(str(file)).encode(CORPUS[0])
    assert load_drafter(str(tmp_path / "hidden_transfer.safetensors"), by_folder, "hidden-transfer").layer == 1


def test_cli_chat_on_a_gguf_file(tmp_path, capsys):
    """decode.py --chat on a .gguf path: the prompt is the file's own chat template (transformers'
    rendering of it), and plain and hidden-transfer decoding answer with the model's greedy tokens."""
    file = write_llama_gguf(tmp_path / "tiny.gguf", hf_llama(), "Q4_1", pre="default")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "To be, or 42?"}]
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=file.name)
    want_prompt = list(ref.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
    want = generate_ar(Transformer.from_pretrained(str(file)), want_prompt, 6, Sampler(), {EOS, EOT})[0]
    for method in (["--method", "ar"], ["--method", "hidden-transfer", "--drafter", "init", "--k", "2"]):
        decode.main(["--checkpoint", str(file), "--device", "cpu", "--chat", "--system", "Be brief.",
                     "--prompt", "To be, or 42?", "--max-new-tokens", "6", "--json", *method])
        r = json.loads(capsys.readouterr().out)
        assert r["prompt_ids"] == want_prompt and r["token_ids"] == want


# ----------------------------------------------------------------------------- RoPE scaling

def llama_cpp_rope_factors(rope_theta, head_dim, factor, low_freq_factor, high_freq_factor, old_context_len):
    # verbatim from llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors)
    import math
    freqs = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(rope_factors, dtype=torch.float32)


# Llama 3.1's constants; with head_dim 16 and theta 500000 the wavelengths 6 .. 6e5 fall in all
# three bands of the rule (kept below 2048, blended, divided by 8 above 8192)
LLAMA31 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=8192)


def test_rope_freqs_read_back_as_llama3_scaling(tmp_path):
    """llama.cpp keeps Llama 3.1's RoPE scaling as a rope_freqs.weight tensor of divisors: it is
    read back as the settings, and the logits are those of the transformers model it came from."""
    # (transformers writes into the dict it is given: pass a copy; a context past the original 8192)
    hf = hf_llama(rope_theta=500000.0, rope_scaling=dict(LLAMA31), max_position_embeddings=16384)
    factors = llama_cpp_rope_factors(500000.0, 16, 8.0, 1.0, 4.0, 8192)
    assert len(set(factors.tolist())) > 2  # some kept (1), some divided (8), some blended
    file = write_llama_gguf(tmp_path / "llama31.gguf", hf, "F32", rope_freqs=factors.numpy())
    ours = Transformer.from_pretrained(str(file))
    assert ours.args.rope_scaling == {k: v for k, v in LLAMA31.items() if k != "rope_type"}
    x = tokens(2, 64)
    assert_close(ours(x), hf(x).logits, atol=1e-4, rtol=0)
    plain = hf_llama(rope_theta=500000.0, max_position_embeddings=16384)  # same weights (same seed), no scaling: visibly different
    assert (plain(x).logits - hf(x).logits).abs().max() > 1e-2


@pytest.mark.parametrize("kind", ["not-llama3", "linear", "yarn"])
def test_other_rope_scaling_refused(tmp_path, kind):
    """RoPE variants we do not implement are refused, not silently ignored."""
    hf = hf_llama(rope_theta=500000.0)
    freqs, kv = None, {}
    if kind == "not-llama3":  # divisors no (factor, 1, 4, 8192) rule makes
        freqs = np.linspace(1.0, 3.0, 8)
    else:
        kv = {"llama.rope.scaling.type": ("add_string", kind), "llama.rope.scaling.factor": ("add_float32", 4.0)}
    file = write_llama_gguf(tmp_path / "m.gguf", hf, "F32", rope_freqs=freqs, kv=kv)
    message = "does not match Llama 3.1's scaling" if kind == "not-llama3" else f"rope scaling '{kind}' is not supported"
    with pytest.raises(ValueError, match=message):
        Transformer.from_pretrained(str(file))


# ----------------------------------------------------------------------------- errors

def test_error_not_llama_architecture(tmp_path):
    file = write_llama_gguf(tmp_path / "qwen.gguf", hf_llama(), "F32", arch="qwen2")
    with pytest.raises(ValueError, match="architecture 'qwen2' is not supported, only 'llama'"):
        Transformer.from_pretrained(str(file))


def test_error_folder_with_two_gguf_files(tmp_path):
    write_llama_gguf(tmp_path / "a-Q8_0.gguf", hf_llama(), "Q8_0")
    write_llama_gguf(tmp_path / "a-F16.gguf", hf_llama(), "F16")
    for load in (Transformer.from_pretrained, Tokenizer):
        with pytest.raises(ValueError, match=r"holds 2 \.gguf files \(a-F16\.gguf, a-Q8_0\.gguf\): pass the one"):
            load(str(tmp_path))
    Transformer.from_pretrained(str(tmp_path / "a-F16.gguf"))  # the way out the message names


@pytest.mark.parametrize("damage", ["truncated-in-tensors", "truncated-in-metadata", "not-gguf-bytes", "empty"])
def test_error_corrupt_gguf(tmp_path, damage):
    good = write_llama_gguf(tmp_path / "good.gguf", hf_llama(), "F32").read_bytes()
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / "model.gguf"
    bad.write_bytes({"truncated-in-tensors": good[: len(good) // 2], "truncated-in-metadata": good[:2000],
                     "not-gguf-bytes": b"PK\x03\x04" + good[4:], "empty": b""}[damage])
    for load in (Transformer.from_pretrained, Tokenizer):
        with pytest.raises(ValueError, match=r"cannot read .*model\.gguf as GGUF"):
            load(str(bad))


def test_error_file_that_is_not_gguf(tmp_path, capsys):
    """A weights file passed where a folder or a .gguf is expected: refused by the model, the
    tokenizer and the command line, each pointing at what to pass instead."""
    hf_llama().save_pretrained(tmp_path)
    file = str(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="is a file but not a .gguf file: point --checkpoint at a checkpoint folder"):
        Transformer.from_pretrained(file)
    with pytest.raises(ValueError, match="is a file but not a .gguf file: pass the checkpoint folder"):
        Tokenizer(file)
    with pytest.raises(SystemExit, match="error: .*is a file but not a .gguf file"):
        decode.main(["--checkpoint", file, "--device", "cpu", "--method", "ar", "--prompt", "x", "--json"])


# ----------------------------------------------------------------------------- GGUF vocabularies

def llama_cpp_smollm_split(encode, text):
    # llama.cpp's "smollm" pre-tokenizer: every \p{N} character alone first, then GPT-2's split
    # on what is left; encode() applies GPT-2's split and the merges to one piece
    return [i for piece in regex.split(r"(\p{N})", text) if piece for i in encode(piece)]


SAMPLE = CORPUS + ["  42", "x  1", "\t\t9", "a\n\n3 ", "v   7 items", "3.14 and 1,000,000", "½ ² ٣",
                   "naïve café — 東京 😀", "a\r\nb\r\n", "   ", "", "<|im_start|>user\nhi<|im_end|>\n",
                   "a<think>b", "I'm don't WE'LL", "x" * 30]


@pytest.mark.parametrize("add_bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("pre", ["default", "gpt-2", "llama-bpe", "smollm"])
def test_gguf_bpe_vocabulary(tmp_path, pre, add_bos):
    """A "gpt2" vocabulary encodes and decodes as transformers' tokenizer of the same file, BOS as
    tokenizer.ggml.add_bos_token says, end of turn among the end ids, chat template rendered alike.
    transformers keeps GPT-2's split for "smollm": there llama.cpp's rule is the oracle
    (digits alone first), which its tokenizer.json (Digits pre-tokenizer) follows too."""
    file = write_llama_gguf(tmp_path / "m.gguf", hf_llama(), "F32", pre=pre, add_bos=add_bos)
    tok = Tokenizer(str(file))
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=file.name)
    plain = functools.partial(ref.encode, add_special_tokens=False)
    encode = functools.partial(llama_cpp_smollm_split, plain) if pre == "smollm" else plain
    bos = [BOS] if add_bos else []
    for text in SAMPLE:
        ids = tok.encode(text)
        assert ids == bos + encode(text), text
        if pre != "smollm":
            assert ids == ref.encode(text), text  # transformers' own BOS convention for the file
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
        assert tok.encode(text, bos=not add_bos) == ([] if add_bos else [BOS]) + encode(text)
    assert tok.decode(tok.encode("a<think>b")) == "a<think>b"  # user-defined: matched whole, kept in text
    assert tok.encode("<|im_end|>", bos=False) == [EOT]
    assert tok.bos_id == BOS and tok.add_bos == add_bos and tok.eos_ids == {EOS, EOT}
    assert tok.vocab_size == len(gpt2_vocab()[0])
    chat = [{"role": "user", "content": "What is 42?"}, {"role": "assistant", "content": "x  1"},
            {"role": "user", "content": "naïve 😀"}]
    rendered = ref.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(chat) == encode(rendered)  # the template writes any BOS itself


def test_gguf_without_eot_or_add_bos_key(tmp_path):
    """No eot id: EOS alone ends generation; no add_bos_token key: a "gpt2" vocabulary adds no BOS.
    (Only the vocabulary: the tokenizer reads no tensor.)"""
    w = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    add_gpt2_vocab(w, pre="default", add_bos=None, eot=False)
    finish(w)
    tok = Tokenizer(str(tmp_path / "vocab.gguf"))
    assert tok.eos_ids == {EOS} and not tok.add_bos and tok.encode("To be")[0] != BOS


def spm_settings(file):
    """The sentencepiece model's normalizer_spec {field number: value}, read off the protobuf
    (field 3 of ModelProto; 1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces)."""
    def varint(b, i):
        n = shift = 0
        while True:
            n, i, shift = n | (b[i] & 0x7F) << shift, i + 1, shift + 7
            if b[i - 1] < 0x80:
                return n, i

    def fields(b):  # {field number: last value}: varints and length-delimited bytes
        i, out = 0, {}
        while i < len(b):
            key, i = varint(b, i)
            if key & 7 == 0:
                out[key >> 3], i = varint(b, i)
            elif key & 7 == 2:
                n, i = varint(b, i)
                out[key >> 3], i = b[i:i + n], i + n
            else:  # fixed 64 / 32 bits
                i += {1: 8, 5: 4}[key & 7]
        return out
    return fields(fields(file.read_bytes())[3])


def test_gguf_sentencepiece_vocabulary(tmp_path):
    """The shipped sentencepiece model (BPE, byte fallback, 4096 pieces) converted to GGUF metadata
    as llama.cpp's converter does it: encode and decode exactly as sentencepiece itself."""
    spec = spm_settings(SHAKESPEARE_SPM)
    # identity normalization, no whitespace squeezing (a GGUF records neither NFKC nor squeezing,
    # so these are what make the comparison fair); the dummy prefix goes into the metadata
    assert spec[1] == b"identity" and spec.get(4, 1) == 0
    add_dummy_prefix = bool(spec.get(3, 1))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SHAKESPEARE_SPM))
    w = gguf.GGUFWriter(str(tmp_path / "spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i) for i in range(sp.vocab_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.vocab_size())])
    # llama.cpp's SentencePieceTokenTypes; its user-defined piece "\n" becomes normal, as there
    w.add_token_types([2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
                       else 6 if sp.is_byte(i) else 1 for i in range(sp.vocab_size())])
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(add_dummy_prefix)
    finish(w)

    tok = Tokenizer(str(tmp_path / "spm.gguf"))
    assert (tok.vocab_size, tok.bos_id, tok.eos_ids, tok.add_bos) == (4096, 1, {2}, True)
    sample = ["ROMEO:\nBut soft, what light through yonder window breaks?\n\n", "To be, or not to be",
              "KING HENRY V.\n  O for a Muse of fire, that would ascend\n", "   lots   of    spaces   ",
              " leading space", "trailing space ", "\n\nleading newlines", "a\r\nb\rc", "tabs\t\tand\u00a0nbsp",
              "3.14159 and 2024-11-28, 1000000 $12.50", "naïve café — 東京 😀🚀 ﬁ Ångström",
              "def f(x):\n\treturn x**2  # square\n", "I'll we'll 'tis o'er", "x" * 40, "", " ", "null\x00byte"]
    for text in sample:
        ids = tok.encode(text)
        assert ids == sp.encode(text, add_bos=True), text
        assert tok.decode(ids) == sp.decode(ids) == text, text
    assert sp.encode("naïve 😀").count(sp.piece_to_id("<0xF0>")) == 1  # byte fallback was exercised


# ----------------------------------------------------------------------------- folders (issue 11)

@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "sharded"])
def test_hf_folder_with_drafters_saved_into_it(tmp_path, sharded):
    """Bug 2 of issue 11: drafters saved beside a transformers checkpoint are not taken for its weights."""
    hf = hf_llama()
    hf.save_pretrained(tmp_path, max_shard_size="150KB" if sharded else "50GB")
    assert (tmp_path / "model.safetensors.index.json").exists() == sharded
    model = Transformer.from_pretrained(str(tmp_path))
    save_drafter(new_drafter("hidden-transfer", model, 2, 1), model, str(tmp_path / "hidden_transfer.safetensors"))
    save_drafter(new_drafter("medusa", model, 2), model, str(tmp_path / "medusa.safetensors"))
    again = Transformer.from_pretrained(str(tmp_path))
    x = tokens(2, 32)
    assert_close(again(x), hf(x).logits, atol=1e-4, rtol=0)
    assert load_drafter(str(tmp_path / "hidden_transfer.safetensors"), again, "hidden-transfer").k == 2
    assert load_drafter(str(tmp_path / "medusa.safetensors"), again, "medusa").k == 2


def meta_folder(d, rows, **params):
    """Meta's layout: params.json `params` + consolidated.00.pth, an embedding of `rows` tokens."""
    model = Transformer(ModelArgs(dim=8, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=rows,
                                  hidden_dim=16, max_seq_len=8))
    d.mkdir()
    torch.save(model.state_dict(), d / "consolidated.00.pth")
    (d / "params.json").write_text(json.dumps(dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=2, multiple_of=16,
                                                   norm_eps=1e-5, **params)))
    return str(d)


@pytest.mark.parametrize("release, vocab, params, context", [
    ("llama-2", 96, dict(vocab_size=-1), 2048),  # Llama 1 and 2 look alike: the shorter context
    ("llama-3", 128256, dict(vocab_size=128256, rope_theta=500000.0), 8192),
    ("llama-3.1", 128256, dict(vocab_size=128256, rope_theta=500000.0, use_scaled_rope=True), 131072),
    ("stated", 96, dict(vocab_size=-1, max_seq_len=512), 512),
])
def test_meta_folder_context(tmp_path, release, vocab, params, context):
    """params.json without max_seq_len: the release's own context, told apart by the weights."""
    model = Transformer.from_pretrained(meta_folder(tmp_path / release, vocab, **params))
    assert model.args.max_seq_len == context
    assert model.rope_cos.shape[0] == context  # positions up to the context are served
    assert (model.args.rope_scaling is not None) == ("use_scaled_rope" in params)


# ----------------------------------------------------------------------------- BOS / EOS conventions

TEXT = "To be, or not to be: that is the question."


def tokenizer_folder(d, post_bos, config):
    """tokenizer.json (a byte-level BPE; with post_bos a Llama 3 post-processor adding
    <|begin_of_text|>) and tokenizer_config.json `config`; returns the id of every special token."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, processors, trainers
    d.mkdir(exist_ok=True)
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    tk.train_from_iterator([TEXT] * 10, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=specials))
    if post_bos:
        tk.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", 0)])
    tk.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"} | config))
    return {t: tk.token_to_id(t) for t in specials}


@pytest.mark.parametrize("post_bos, config, adds_bos", [
    (True, {}, True),                             # Llama 3: the post-processor adds <|begin_of_text|>
    (False, {}, False),                           # SmolLM2: nothing adds a BOS
    (True, {"add_bos_token": True}, True),        # Llama 2 as transformers saves it: both agree
    (False, {"add_bos_token": False}, False),
], ids=["llama3-post-processor", "no-post-processor", "add_bos_token-true", "add_bos_token-false"])
def test_tokenizer_json_bos_like_transformers(tmp_path, post_bos, config, adds_bos):
    """A Hugging Face folder's BOS convention, checked against transformers' tokenizer of the folder."""
    ids = tokenizer_folder(tmp_path, post_bos, config)
    tok = Tokenizer(str(tmp_path))
    want = transformers.AutoTokenizer.from_pretrained(str(tmp_path)).encode(TEXT)
    assert tok.encode(TEXT) == want
    assert tok.add_bos == adds_bos and (want[0] == ids["<|begin_of_text|>"]) == adds_bos
    assert tok.decode(tok.encode(TEXT)) == TEXT


@pytest.mark.parametrize("post_bos, add_bos_token", [(False, True), (True, False)])
def test_add_bos_token_overrides_the_post_processor(tmp_path, post_bos, add_bos_token):
    """When tokenizer_config.json's add_bos_token and the post-processor disagree, add_bos_token
    decides (as transformers 4's Llama tokenizers did by rebuilding the post-processor; transformers
    5 follows a byte-level tokenizer.json's post-processor instead)."""
    ids = tokenizer_folder(tmp_path, post_bos, {"add_bos_token": add_bos_token})
    tok = Tokenizer(str(tmp_path))
    assert tok.add_bos == add_bos_token
    assert (tok.encode(TEXT)[0] == ids["<|begin_of_text|>"]) == add_bos_token


def test_eos_ids_from_every_file(tmp_path):
    """Llama 3.1-style: generation_config.json lists three end ids, config.json names one,
    tokenizer_config.json another: every one of them ends generation, and nothing else does."""
    ids = tokenizer_folder(tmp_path, True, {"eos_token": "<|eot_id|>"})
    ends = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]
    (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": ends[:2]}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": ends[0]}))
    tok = Tokenizer(str(tmp_path))
    assert tok.eos_ids == set(ends)
    assert tok.bos_id == ids["<|begin_of_text|>"]


def test_sentencepiece_folder_adds_bos(tmp_path):
    """A sentencepiece tokenizer.model: BOS first, as every sentencepiece Llama; tokenizer_config.json may say no."""
    shutil.copy(SHAKESPEARE_SPM, tmp_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SHAKESPEARE_SPM))
    tok = Tokenizer(str(tmp_path))
    assert tok.encode(TEXT) == sp.encode(TEXT, add_bos=True) and tok.encode(TEXT)[0] == 1
    assert tok.eos_ids == {2}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    assert Tokenizer(str(tmp_path)).encode(TEXT) == sp.encode(TEXT)
