"""The model's own tokenizer, with the model's own conventions.

Three sources, one interface: a sentencepiece `tokenizer.model` (Llama 1/2, TinyLlama,
the shipped Shakespeare model), a Hugging Face `tokenizer.json` (Llama 3, SmolLM2, ...),
or the vocabulary stored inside a `.gguf` file. Whether a BOS is prepended, which ids
end generation and how a chat is rendered all come from the checkpoint's own files,
never from guesses: `encode(text)` gives what `transformers`' tokenizer gives.
"""
import hashlib
import json
import os

from model import _read_json, gguf_file, gguf_metadata


class Tokenizer:
    """encode / decode, bos_id, add_bos, eos_ids (every id that ends generation), chat_template."""

    def __init__(self, path):
        self.sp = self.tk = None
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        if os.path.isfile(path) and not path.endswith(".gguf"):
            raise ValueError(f"{path!r} is a file but not a .gguf file: pass the checkpoint folder")
        spm = os.path.join(folder, "tokenizer.model")
        tjson = os.path.join(folder, "tokenizer.json")
        config = _read_json(os.path.join(folder, "tokenizer_config.json")) \
            if os.path.exists(os.path.join(folder, "tokenizer_config.json")) else {}
        gguf = gguf_file(path)
        self.chat_template = _chat_template(folder, config)
        # Llama 3 ships a tiktoken text file named tokenizer.model: look at the bytes, not the name
        if os.path.isdir(path) and os.path.exists(spm) and _is_sentencepiece(spm):
            import sentencepiece
            self.sp = sentencepiece.SentencePieceProcessor(model_file=spm)
            self.vocab_size = self.sp.vocab_size()
            self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
            self.eos_ids = {self.sp.eos_id()} | _hf_end_ids(folder, config, self.sp.piece_to_id)
            self.add_bos = config.get("add_bos_token", True)  # sentencepiece Llamas start with BOS
        elif os.path.isdir(path) and os.path.exists(tjson):
            from tokenizers import Tokenizer as HFTokenizer
            self.tk = HFTokenizer.from_file(tjson)
            self.vocab_size = self.tk.get_vocab_size()
            self.bos_id = _token_id(config.get("bos_token"), self.tk.token_to_id)
            for name in ("generation_config.json", "config.json"):
                f = os.path.join(folder, name)
                if self.bos_id is None and os.path.exists(f) and isinstance(_read_json(f).get("bos_token_id"), int):
                    self.bos_id = _read_json(f)["bos_token_id"]
            self.eos_ids = _hf_end_ids(folder, config, self.tk.token_to_id)
            # A BOS comes from tokenizer_config.json's add_bos_token, or else from the
            # tokenizer.json post-processor (Llama 3's adds <|begin_of_text|>, SmolLM2's nothing)
            with_special, plain = self.tk.encode("a").ids, self.tk.encode("a", add_special_tokens=False).ids
            post_bos = with_special[0] if with_special[:1] != plain[:1] else None
            self.bos_id = self.bos_id if self.bos_id is not None else post_bos
            self.add_bos = config.get("add_bos_token")
            if self.add_bos is None:
                self.add_bos = post_bos is not None and post_bos == self.bos_id
        elif gguf:
            self._from_gguf(gguf)
        else:
            raise FileNotFoundError(f"no tokenizer in {path!r}: expected a sentencepiece tokenizer.model, a "
                                    f"tokenizer.json or a .gguf file (Llama 3's tiktoken tokenizer.model needs "
                                    f"the tokenizer.json published beside it)")
        if self.add_bos and self.bos_id is None:
            raise ValueError(f"the tokenizer in {path!r} asks for a BOS token but names none")

    def _from_gguf(self, file):
        meta = gguf_metadata(file)
        kind = meta.get("tokenizer.ggml.model")
        if kind == "gpt2":
            self.tk = _gguf_bpe(file, meta)
        elif kind == "llama":
            self.tk = _gguf_sentencepiece(meta)
        else:
            raise ValueError(f"{file}: tokenizer model {kind!r} is not supported (only 'gpt2' BPE and 'llama' "
                             f"sentencepiece); put the model's tokenizer.json beside the .gguf file")
        self.vocab_size = self.tk.get_vocab_size()
        self.bos_id = meta.get("tokenizer.ggml.bos_token_id")
        # llama.cpp's own default when the file does not say: sentencepiece models add a BOS
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
        self.eos_ids = {meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                          "tokenizer.ggml.eom_token_id") if k in meta}
        self.chat_template = self.chat_template or meta.get("tokenizer.chat_template")

    def encode(self, text, bos=None):
        """Token ids of `text`, with a BOS in front when the model's tokenizer adds one
        (bos=True / False forces it). Special tokens written in the text (<|im_start|>) are
        read as such, as `transformers` does, except through a sentencepiece
        tokenizer.model, which reads "<s>" as plain text as sentencepiece itself does.
        Where tokenizer_config.json's add_bos_token and tokenizer.json's post-processor
        disagree, add_bos_token decides."""
        bos = self.add_bos if bos is None else bos
        ids = self.sp.encode(text) if self.sp else self.tk.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids

    def decode(self, ids):
        """Text of `ids`, special tokens (BOS, end of turn) left out."""
        return self.sp.decode(list(ids)) if self.sp else self.tk.decode(list(ids), skip_special_tokens=True)

    def fingerprint(self):
        """A short hash of the vocabulary: data files record it, so that ids made by one
        tokenizer are never fed to a model with another."""
        pieces = "\n".join(self.id_to_piece(i) or "" for i in range(self.vocab_size))
        return hashlib.sha256(pieces.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def id_to_piece(self, i):
        return self.sp.id_to_piece(i) if self.sp else self.tk.id_to_token(i)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """[{"role": ..., "content": ...}, ...] -> token ids of the conversation rendered with the
        model's own chat template, ending with the assistant's turn header when asked."""
        if not self.chat_template:
            raise ValueError("this model has no chat template (tokenizer_config.json chat_template, "
                             "chat_template.jinja or GGUF tokenizer.chat_template): drop --chat and write "
                             "the prompt yourself")
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        # the settings transformers renders templates with, so that whitespace comes out the same
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = raise_exception
        piece = lambda i: self.id_to_piece(i) if i is not None else ""
        try:
            text = env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=piece(self.bos_id), eos_token=piece(min(self.eos_ids, default=None)))
        except jinja2.TemplateError as e:
            raise ValueError(f"cannot render the model's chat template: {e}") from None
        # the template writes the BOS itself when the model wants one: never add a second
        return self.encode(text, bos=False)


def _is_sentencepiece(file):
    # a sentencepiece model is a protobuf: binary, starts with field 1 (pieces), wire type 2
    with open(file, "rb") as f:
        head = f.read(1)
    return head == b"\x0a"


def _token_id(token, to_id):
    token = token.get("content") if isinstance(token, dict) else token
    return to_id(token) if token else None


def _hf_end_ids(folder, config, to_id):
    """Every id the checkpoint names as an end: generation_config.json, config.json, tokenizer config."""
    ids = set()
    for name in ("generation_config.json", "config.json"):
        f = os.path.join(folder, name)
        if os.path.exists(f):
            e = _read_json(f).get("eos_token_id")
            ids |= set(e) if isinstance(e, list) else {e} if isinstance(e, int) else set()
    eos = _token_id(config.get("eos_token"), to_id)
    return ids | ({eos} if eos is not None else set())


def _chat_template(folder, config):
    f = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(f):
        with open(f) as fh:
            return fh.read()
    t = config.get("chat_template")
    if isinstance(t, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        t = {x["name"]: x["template"] for x in t}.get("default")
    return t


# ----------------------------------------------------------------------------- GGUF vocabularies
#
# llama.cpp keeps the vocabulary, merges and token types in the file's metadata; we
# rebuild from them the tokenizer `tokenizers` would load from the original tokenizer.json.

GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4  # llama.cpp token types (1 normal, 2 unknown, 6 byte)

# How text is split before byte-level BPE, by the file's tokenizer.ggml.pre
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _gguf_bpe(file, meta):
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
    tokens, pre = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.pre", "default")
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("default", "gpt-2"):
        split = byte_level
    elif pre == "smollm":  # SmolLM's tokenizer.json: every digit alone, then GPT-2's split
        split = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("llama3", "llama-v3", "llama-bpe"):
        split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
                                         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        raise ValueError(f"{file}: pre-tokenizer {pre!r} is not supported (default, gpt-2, smollm, llama-bpe); "
                         f"put the model's tokenizer.json beside the .gguf file")
    # Llama 3 takes a whole pre-token from the vocabulary before trying merges
    tk = HFTokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges,
                                ignore_merges=pre in ("llama3", "llama-v3", "llama-bpe")))
    tk.pre_tokenizer = split
    tk.decoder = decoders.ByteLevel()
    _add_special(tk, tokens, meta)
    return tk


def _gguf_sentencepiece(meta):
    """Llama 2's sentencepiece BPE as `tokenizers` runs it: merges ranked by the merged piece's score."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, normalizers
    tokens, scores = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in zip(tokens, scores):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((score, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    unk = tokens[meta.get("tokenizer.ggml.unknown_token_id", 0)]
    tk = HFTokenizer(models.BPE(vocab, [(l, r) for *_, l, r in merges], unk_token=unk,
                                fuse_unk=True, byte_fallback=True))
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)  # sentencepiece's "dummy prefix"
    tk.normalizer = normalizers.Sequence(([normalizers.Prepend("▁")] if prefix else [])
                                         + [normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                   + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    _add_special(tk, tokens, meta)
    return tk


def _add_special(tk, tokens, meta):
    # control tokens (<|im_start|>, <s>) and user-defined ones are matched whole in the text
    from tokenizers import AddedToken
    types = meta.get("tokenizer.ggml.token_type", [])
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                           for i, t in enumerate(types) if t == GGUF_CONTROL])
    tk.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                   for i, t in enumerate(types) if t == GGUF_USER_DEFINED])
