#!/usr/bin/env python3
"""Throughput of Hugging Face `tokenizers` on one core, and the ids moetune's bench must reproduce.

Why: moetune's tokenizer (src/tokenizer/) must be at least as fast as HF's on the data it tokenizes before training.
This writes a ~20 MB multilingual text (deterministic), trains two tokenizers on part of it -- Qwen2-style byte-level
BPE and Mixtral-style SentencePiece BPE, shaped as in make_fixtures.py, --vocab-size 32000 (the trainer stops near
25k on this text) -- times HF encoding it on one thread, and writes HF's ids so that tools/tokenizer/bench_tokenizer.cpp checks the same ids while timing moetune.

  RAYON_NUM_THREADS=1 /opt/hfref/bin/python tools/tokenizer/bench_hf.py --out /tmp/moetune_tokbench
  build/bench_tokenizer /tmp/moetune_tokbench      (see bench_tokenizer.cpp for the one-line g++ build)

Two modes per tokenizer: "document" (the whole 20 MB text in one encode call) and "lines" (encode_batch over its
lines, RAYON_NUM_THREADS=1 so one core). Results go to <out>/hf_results.json; the ids to <out>/<name>.<mode>.ids
(little-endian uint32).
"""

import argparse
import json
import os
import random
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as fx  # noqa: E402

SYLLABLES = ["ka", "to", "ri", "mon", "sel", "ver", "an", "di", "que", "str", "ung", "ent", "pro", "lo", "ba", "zen",
             "tion", "ic", "al", "er", "sch", "ch", "ei", "au", "th", "ing", "ou", "ph", "ly", "ness"]


def make_text(rng, target_bytes):
    """Real sentences of make_fixtures' pools mixed with a Zipf-distributed synthetic vocabulary, numbers, code,
    CJK and emoji: many distinct words, so the BPE word caches do not make the job trivial."""
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(60000)]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    pools = fx.ENGLISH + fx.GERMAN + fx.CHINESE + fx.JAPANESE + fx.ARABIC + fx.OTHER + fx.CODE
    lines, size = [], 0
    while size < target_bytes:
        parts = []
        for _ in range(rng.randint(3, 12)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(" ".join(rng.choices(words, weights, k=rng.randint(3, 15))) + rng.choice([".", ",", "!", "?", ":"]))
            elif kind < 0.75:
                parts.append(rng.choice(pools))
            elif kind < 0.85:
                parts.append("".join(rng.choices(cjk, k=rng.randint(4, 30))) + "。")
            elif kind < 0.93:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 15))))
            else:
                parts.append(rng.choice(fx.EMOJI) + rng.choice([" ", "  ", "\t"]))
        line = " ".join(parts)
        lines.append(line)
        size += len(line.encode("utf-8")) + 1
    return "\n".join(lines) + "\n"


def qwen2_spec(corpus, vocab_size):
    from tokenizers import Regex, normalizers, pre_tokenizers
    split = pre_tokenizers.Split(Regex(fx.QWEN2_PATTERN), behavior="isolated", invert=False)
    spec = fx.trained_bytelevel(corpus, pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False, trim_offsets=False)]), normalizers.NFC(), vocab_size)
    n = len(spec["model"]["vocab"])
    spec["added_tokens"] = [fx.added(n, "<|endoftext|>", True), fx.added(n + 1, "<|im_start|>", True),
                            fx.added(n + 2, "<|im_end|>", True)]
    spec["post_processor"] = fx.bytelevel(False, False, False)
    spec["decoder"] = fx.bytelevel(False, False, False)
    return spec


def mixtral_spec(corpus, vocab_size):
    from tokenizers import models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, limit_alphabet=1000,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(corpus, trainer)
    trained = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
             "vocab": vocab, "merges": trained["merges"]}
    spec, _ = fx.mixtral_spm(model)
    spec["added_tokens"] = spec["added_tokens"][:3]
    return spec


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/moetune_tokbench")
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--vocab-size", type=int, default=32000)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    text_path = os.path.join(args.out, "text.txt")
    text = make_text(random.Random(99), int(args.megabytes * 1e6))
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(text)
    nbytes = len(text.encode("utf-8"))
    lines = text.split("\n")
    print(f"text: {nbytes / 1e6:.1f} MB, {len(lines)} lines -> {text_path}")

    sample = text[: 4_000_000]
    results = {"bytes": nbytes, "lines": len(lines), "rayon_threads": os.environ["RAYON_NUM_THREADS"], "runs": []}
    for name, build in [("qwen2", qwen2_spec), ("mixtral", mixtral_spec)]:
        t0 = time.time()
        spec = build(sample.split("\n"), args.vocab_size)
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, ensure_ascii=False)
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        print(f"{name}: trained vocab {tok.get_vocab_size()} in {time.time() - t0:.0f} s")
        for mode in ["document", "lines"]:
            best, ids = None, None
            for _ in range(2):
                t0 = time.perf_counter()
                if mode == "document":
                    ids = tok.encode(text, add_special_tokens=False).ids
                else:
                    encodings = tok.encode_batch(lines, add_special_tokens=False)
                    ids = [i for e in encodings for i in e.ids]
                elapsed = time.perf_counter() - t0
                best = elapsed if best is None else min(best, elapsed)
            np.asarray(ids, dtype="<u4").tofile(os.path.join(args.out, f"{name}.{mode}.ids"))
            run = {"tokenizer": name, "mode": mode, "seconds": best, "mb_per_s": nbytes / 1e6 / best, "tokens": len(ids)}
            results["runs"].append(run)
            print(f"  HF {mode:8s}: {best:6.2f} s  {run['mb_per_s']:6.2f} MB/s  {len(ids)} tokens")
    with open(os.path.join(args.out, "hf_results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
