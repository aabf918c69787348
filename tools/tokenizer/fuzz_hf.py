#!/usr/bin/env python3
"""Random strings over all of Unicode, and the ids HF tokenizers gives for them with the five fixture tokenizers (and
Transformers' AutoTokenizer for the two tokenizer.model fixtures; needs transformers, sentencepiece and protobuf).

Why: the committed fixtures pin 2000 random strings; this draws as many more as wanted (any code point, including
those of the newest Unicode versions, private use and noncharacters, mixed with ASCII, whitespace and contractions)
so that a change of moetune or of the reference `tokenizers` can be checked far wider, on demand:

  /opt/hfref/bin/python tools/tokenizer/fuzz_hf.py --seed 1 --count 20000 --out /tmp/tokenizer_fuzz.json
  g++ -std=c++20 -O2 -Isrc src/tokenizer/*.cpp tools/tokenizer/fuzz_tokenizer.cpp -lpcre2-8 -licuuc -pthread \\
      -o build/fuzz_tokenizer && build/fuzz_tokenizer /tmp/tokenizer_fuzz.json
"""

import argparse
import json
import os
import random

from tokenizers import Tokenizer

NAMES = ["qwen2_bytelevel", "olmoe_bytelevel", "gpt2_prefix", "mixtral_spm", "llama_metaspace"]
SPM_NAMES = ["spm_bpe", "spm_unigram"]


def random_char(rng):
    r = rng.random()
    if r < 0.3:
        return chr(rng.randint(0x20, 0x7E))
    if r < 0.5:
        return chr(rng.randint(0x80, 0x2FFF))
    if r < 0.6:
        return rng.choice([" ", "\n", "\t", "\r", "\x85", "\u2028", "\u00a0", "\u3000", "'", "s", "S", "ll", "<s>",
                           "<|im_start|>"])
    c = rng.randint(0x3000, 0xFFFF) if r < 0.8 else rng.randint(0x10000, 0x10FFFF)
    return chr(0x41 if 0xD800 <= c <= 0xDFFF else c)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--fixtures", default="tests/fixtures/tokenizer")
    parser.add_argument("--out", default="/tmp/tokenizer_fuzz.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    texts = ["".join(random_char(rng) for _ in range(rng.randint(0, 30))) for _ in range(args.count)]
    out = {"fixtures": os.path.abspath(args.fixtures), "texts": texts, "ids": {}}
    for name in NAMES:
        tok = Tokenizer.from_file(os.path.join(args.fixtures, name, "tokenizer.json"))
        out["ids"][name] = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    # The tokenizer.model fixtures, as Transformers converts and encodes them (make_spm_fixtures.py).
    from transformers import AutoTokenizer
    for name in SPM_NAMES:
        tok = AutoTokenizer.from_pretrained(os.path.join(args.fixtures, name))
        out["ids"][name] = [tok.encode(t, add_special_tokens=False) for t in texts]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print(f"{len(texts)} strings x {len(out['ids'])} tokenizers -> {args.out}")


if __name__ == "__main__":
    main()
