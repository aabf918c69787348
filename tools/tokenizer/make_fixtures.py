#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/: five small tokenizers trained here, and the ids Hugging Face `tokenizers` gives.

Why: moetune's C++ tokenizer (src/tokenizer/) must give exactly the ids of HF `tokenizers`. No model can be downloaded, so
this script trains its own small tokenizers (vocab ~1000) on a multilingual corpus it writes itself, shaped like the
tokenizer.json files of the models moetune fine-tunes:

  qwen2_bytelevel   Qwen2/Qwen3: NFC, Split(Qwen regex) + ByteLevel(use_regex=false), merges as "a b" strings,
                    specials <|endoftext|> <|im_start|> <|im_end|> after the vocab, non-special <think> </think>
  olmoe_bytelevel   OLMoE / GPT-NeoX: NFC, ByteLevel(use_regex=true), specials inside the vocab (ids 0, 1), runs of
                    spaces as non-special *normalized* added tokens, TemplateProcessing "$A <|endoftext|>"
  gpt2_prefix       GPT-2/RoBERTa-like: no normalizer, ByteLevel(add_prefix_space=true), ignore_merges=true,
                    <mask> (lstrip), <sep> (rstrip), <word> (single_word), RobertaProcessing
  mixtral_spm       Mixtral/Llama-2 tokenizer.json: normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer,
                    byte_fallback with <0xXX> tokens, fuse_unk, decoder Replace/ByteFallback/Fuse/Strip, "<s> $A"
  llama_metaspace   the same model with the newer form: Metaspace(prepend_scheme="first", split=false) pre-tokenizer,
                    decoder Metaspace/ByteFallback/Fuse

variants.json holds small changes to those five (other Split behaviors, Metaspace schemes, Replace/Strip decoders,
unk without byte fallback, Bert/Sequence post-processors, ...) with HF's ids for the hand-written texts.

For each it writes <name>/tokenizer.json, <name>/tokenizer_config.json and <name>/expected.json:
  cases:   hand-written adversarial texts -> ids, ids with special tokens, decode, decode(skip_special_tokens)
  random:  ids for every string of random_strings.json (shared by all five), and the decode where it is not the text
           ("roundtrip": "prefix_space" -> not the text with a space put in front when it lacks one)
  decode:  random id sequences -> decode, decode(skip_special_tokens)
Texts that are not valid UTF-8 are stored as {"hex": ...}; HF sees them decoded with errors="replace" (moetune's rule).

Run from the repository root:  /opt/hfref/bin/python tools/tokenizer/make_fixtures.py
(deterministic: same tokenizers version -> byte-identical files; checks the total stays under 1.5 MB).
"""

import argparse
import contextlib
import json
import os
import random
import re
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+")

# ---------------------------------------------------------------------------------------------------------------------
# The corpus (written here, deterministic)

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.", "It's a truth universally acknowledged, isn't it?",
    "We'll see what they're doing; I'd say it's fine.", "Fine-tuning mixture-of-experts models needs careful routing.",
    "She said: \"Don't touch the experts' weights!\"", "THE ROUTER'S LOAD BALANCE LOSS IS SMALL.",
    "You've got mail, and they've got tokens.", "Tokenizers split text into words, then words into pieces.",
    "I'm sure the learning rate was 3e-4 at step 1000.", "Attention is all you need, or so they say.",
    "The cat sat on the mat, and the dog sat on the log.", "Numbers like 42, 3.14159 and 1,000,000 appear often.",
]
GERMAN = [
    "Größere Modelle benötigen mehr Speicher.", "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "Die Straße ist nass, weil es geregnet hat.", "Fünf Äpfel und zwölf Birnen kosten 3,50 €.",
    "Können wir morgen früh anfangen?", "Das Mädchen läuft schnell über die Brücke.",
]
CHINESE = ["我们正在训练一个混合专家模型。", "今天天气很好，我们去公园散步吧。", "机器学习需要大量的数据和计算资源。",
           "分词器把文本切成词元。", "你好，世界！"]
JAPANESE = ["東京は日本の首都です。", "私はコーヒーが好きですが、お茶も飲みます。", "カタカナとひらがなを混ぜて書きます。",
            "トークナイザーのテストです。"]
ARABIC = ["مرحبا بالعالم", "اللغة العربية جميلة جدا", "نحن نتعلم البرمجة", "السلام عليكم ورحمة الله"]
OTHER = ["Привет, мир! Как дела?", "안녕하세요 세계", "Γειά σου Κόσμε", "नमस्ते दुनिया", "Xin chào thế giới",
         "Ça va très bien, merci.", "¿Dónde está la biblioteca?"]
EMOJI = ["🙂", "🎉🎉", "👩‍💻", "👨‍👩‍👧‍👦", "🇩🇪", "👍🏽", "❤️", "🤖", "🔥🔥🔥"]
CODE = [
    "def add(a, b):\n    return a + b\n", "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}\n",
    "if x == 10:\n        print('ten')\n", "const y = {\"key\": [1, 2, 3]};\n", "#include <vector>\nint main() { return 0; }\n",
    "SELECT name, COUNT(*) FROM users WHERE id > 100 GROUP BY name;\n", "x = [i ** 2 for i in range(10)]  # squares\n",
]


def make_corpus(rng, lines=4000):
    pools = [ENGLISH] * 5 + [GERMAN] * 2 + [CHINESE, JAPANESE, ARABIC, OTHER, CODE, CODE]
    corpus = []
    for _ in range(lines):
        parts = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.75:
                parts.append(rng.choice(rng.choice(pools)))
            elif kind < 0.85:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif kind < 0.92:
                parts.append(rng.choice(EMOJI))
            else:
                parts.append(rng.choice([" " * rng.randint(2, 8), "\t", "\n", "\n\n", "\r\n"]))
        corpus.append(rng.choice([" ", "", "\n"]).join(parts))
    # Chat-formatted lines so the special tokens sit inside text (the trainer must not learn them).
    for i in range(300):
        corpus.append(f"<|im_start|>user\n{rng.choice(ENGLISH)}<|im_end|>\n<|im_start|>assistant\n"
                      f"{rng.choice(CHINESE + GERMAN)}<|im_end|><|endoftext|>")
    return corpus


# ---------------------------------------------------------------------------------------------------------------------
# The five tokenizers


def trained_bytelevel(corpus, pre_tokenizer, normalizer, vocab_size, special_tokens=()):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(special_tokens))
    tok.train_from_iterator(corpus, trainer)
    return json.loads(tok.to_str())


def added(id_, content, special, normalized=None, lstrip=False, rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized, "special": special}


def bytelevel(add_prefix_space, use_regex, trim_offsets):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def qwen2_bytelevel(corpus):
    split = pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False)
    spec = trained_bytelevel(corpus, pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False, trim_offsets=False)]), normalizers.NFC(), 1200)
    model = spec["model"]
    # Qwen2's file writes merges as "a b" strings and empty (not null) prefix/suffix.
    model["merges"] = [f"{a} {b}" for a, b in model["merges"]]
    model["continuing_subword_prefix"] = ""
    model["end_of_word_suffix"] = ""
    n = len(model["vocab"])
    spec["added_tokens"] = [added(n, "<|endoftext|>", True), added(n + 1, "<|im_start|>", True),
                            added(n + 2, "<|im_end|>", True), added(n + 3, "<think>", False, normalized=False),
                            added(n + 4, "</think>", False, normalized=False)]
    spec["post_processor"] = bytelevel(False, False, False)
    spec["decoder"] = bytelevel(False, False, False)
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "model_max_length": 32768}
    return spec, config


def olmoe_bytelevel(corpus):
    spec = trained_bytelevel(corpus, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True, trim_offsets=True),
                             normalizers.NFC(), 1000, special_tokens=["<|endoftext|>", "<|padding|>"])
    n = len(spec["model"]["vocab"])
    tokens = [added(0, "<|endoftext|>", True), added(1, "<|padding|>", True)]
    # GPT-NeoX's runs of spaces: non-special, normalized, matched before pre-tokenization (longest first).
    for width in range(24, 1, -1):
        tokens.append(added(n + len(tokens) - 2, " " * width, False))
    tokens.append(added(n + len(tokens) - 2, "|||IP_ADDRESS|||", True, normalized=False))
    spec["added_tokens"] = tokens
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}}
    spec["decoder"] = bytelevel(False, True, True)
    config = {"tokenizer_class": "GPTNeoXTokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
              "pad_token": "<|padding|>", "model_max_length": 4096}
    return spec, config


def gpt2_prefix(corpus):
    spec = trained_bytelevel(corpus, pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True, trim_offsets=True),
                             None, 900, special_tokens=["<s>", "</s>", "<pad>"])
    spec["model"]["ignore_merges"] = True
    n = len(spec["model"]["vocab"])
    spec["added_tokens"] = [added(0, "<s>", True), added(1, "</s>", True), added(2, "<pad>", True),
                            added(n, "<mask>", True, normalized=False, lstrip=True),
                            added(n + 1, "<sep>", False, normalized=False, rstrip=True),
                            added(n + 2, "<word>", False, normalized=True, single_word=True),
                            added(n + 3, "<both>", False, normalized=False, lstrip=True, rstrip=True)]
    spec["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", 1], "cls": ["<s>", 0], "trim_offsets": True,
                              "add_prefix_space": True}
    spec["decoder"] = bytelevel(True, True, True)
    config = {"tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
              "mask_token": "<mask>", "model_max_length": 512}
    return spec, config


def spm_model(corpus):
    """A SentencePiece-style BPE (words start with ▁) with <unk> <s> </s> then <0x00>..<0xFF> first, as in Llama/Mixtral."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    # limit_alphabet keeps rare characters (most CJK, Arabic, emoji) out, so byte fallback is exercised.
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False, limit_alphabet=150,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator([line.replace("<|im_start|>", "").replace("<|im_end|>", "").replace("<|endoftext|>", "")
                             for line in corpus], trainer)
    trained = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    return {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab, "merges": trained["merges"]}


def spm_common(model):
    n = len(model["vocab"])
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>", True), added(1, "<s>", True), added(2, "</s>", True),
                         # normalized=true: the pattern is the *normalized* content ("▁[INST]" under Prepend).
                         added(n, "[INST]", False, normalized=True), added(n + 1, "[/INST]", False, normalized=True)],
        "normalizer": None, "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": None, "model": model}


def mixtral_spm(model):
    spec = spm_common(model)
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "model_max_length": 32768, "legacy": True}
    return spec, config


def llama_metaspace(model):
    spec = spm_common(model)
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}, {"type": "ByteFallback"},
        {"type": "Fuse"}]}
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "model_max_length": 4096, "legacy": False}
    return spec, config


# ---------------------------------------------------------------------------------------------------------------------
# Test strings

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|padding|>", "|||IP_ADDRESS|||",
            "<s>", "</s>", "<pad>", "<unk>", "<mask>", "<sep>", "<word>", "<both>", "[INST]", "[/INST]"]
FRAGMENTS = ["<|", "|>", "<|im_", "start|>", "<|im_end", "<think", "think>", "</", "<", ">", "[INST", "INST]", "<0x41>",
             "<0xZZ>", "|||IP_", "<s", "s>", "▁", "▁▁", "Ġ", "Ċ", "âĢ"]

HAND_CASES = [
    "", " ", "  ", "    ", " " * 30, "\t", "\n", "\r\n", "\n\n\n", " \n \n ", "\t\t  \t", "a" + " " * 25 + "b",
    "Hello world", " Hello world", "Hello  world", "Hello world ", "hello\tworld\nnext line\r\nwindows",
    "It's, they'll, we're, I've, I'm, he'd, don't", "IT'S THEY'LL WE'RE I'VE I'M HE'D DON'T", "It'S tHeY'Ll wE'rE",
    "'s'll 're 've'm'd't", "ſ 'ſ K 'K", "1234567890123456789012345678901234567890", "3.14159 and 2,718,281 and -42",
    "١٢٣ ４５６ ²³ Ⅻ", "Größere Modelle benötigen mehr Speicher.", "我们正在训练一个混合专家模型。", "東京は日本の首都です。",
    "مرحبا بالعالم", "안녕하세요", "Γειά σου Κόσμε", "नमस्ते दुनिया", "🙂🙂🙂🙂🙂🙂🙂🙂", "🔥" * 20,
    "👨‍👩‍👧‍👦 family", "👩🏽‍💻 coder", "🇩🇪🇯🇵🇺🇸", "❤️‍🔥", "e\u0301 vs é", "a\u0308\u0301\u0327 stacked marks",
    "\u212b vs \u00c5", "\u1100\u1161\u11a8 jamo", "ﬁ ligature", "\u00a0nbsp\u3000ideographic\u2028line\u2029para",
    "\u0085nel\u200bzwsp\ufeffbom", "def add(a, b):\n    return a + b\n", "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "    indented\n        more", "x==1&&y!=2||z>=3", "https://example.com/path?q=1&r=2#frag", "snake_case_name CamelCase",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "<|im_start|><|im_end|><|endoftext|>",
    "text<|endoftext|>text", " <|endoftext|> ", "<|im_start|user", "<|im_start", "im_start|>", "<|endoftext|",
    "<<|im_start|>>", "<think>reasoning</think>answer", "a<think>b", "<s>[INST] What is 2+2? [/INST] 4</s>",
    "<s><s></s>", "</s>hello", "[INST]x[/INST]", " [INST] ", "<unk>", "<mask>", "Hello <mask> world", "a   <mask>",
    "x<sep>   y", "<sep>", "a <word> b", "a<word>b", "<word>", " <word>", "é<word>", "x <both>   y", "   <both>",
    "|||IP_ADDRESS|||", "Visit |||IP_ADDRESS||| now", "<|padding|><|padding|>", "▁leading meta", "▁▁▁", "Ġhello",
    "<0x41><0xZZ>", "ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0001F9EC", "\x00\x01\x1f\x7f control", "tab\tsep\tvalues\t",
    "Mixed: English, Deutsch (Ä), 中文, 日本語, العربية, 🙂, and code `x += 1`.",
    # Letters of Unicode 15.0 (CJK ext. H), 15.1 (ext. I), 16.0 (Cyrillic TJE, Garay digits): HF's regexes know them.
    "\U00031350\U0002EBF0 \u1c89\u1c8a x\U00010D40\U00010D41",
    # U+08CD (Unicode 14, combining class 230) before U+0F71 (class 129): HF's NFC (Unicode 9.0) does not reorder.
    "a\u08cd\u0f71 b\u0f71\u08cd",
]
INVALID_HAND_CASES = [b"\xff", b"abc\xe2\x82", b"\xc0\xaf slash", b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 big",
                      b"\xf0\x9f\x99 cut emoji", b"ok \x80\x80\x80 conts", b"<|im_start|>\xfe<|im_end|>",
                      b"\xe4\xb8 \xe4\xb8\xad", b"\xf0\x80\x80\x80", b"\xe0\x80\xaf", b"a\xc3"]

RANDOM_COUNT = 2000


def random_strings(rng, words):
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    singles = (list(letters) + list("0123456789") + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") +
               [" ", " ", " ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\u0085", "\u200b", "\u200d",
                "\ufeff", "\x0b", "\x0c", "\x00"] +
               list("我们正在训练模型数据東京日本首都ですカタカナひらがな한국어안녕مرحباالعربيةПриветΓειάनमस्तेÄÖÜäöüßéèêçñ") +
               ["\u0301", "\u0308", "\u0327", "\u0651", "\u093f", "\u1100", "\u1161", "\u11a8", "\u212b", "\u212a",
                "\u017f", "ﬁ", "²", "½", "Ⅻ", "١", "４", "ꙮ", "𝔘", "\U0001F9EC", "\U000E0041", "\uE000", "\uFFFD",
                "\uFFFF"] +
               EMOJI + ["\u200d", "\ufe0f", "\U0001F3FD"])
    contractions = ["'s", "'S", "'ll", "'LL", "'Ll", "'re", "'RE", "'ve", "'m", "'M", "'d", "'D", "'t", "'T", "'", "''"]
    out = []
    while len(out) < RANDOM_COUNT:
        parts = []
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6])):
            kind = rng.random()
            if kind < 0.35:
                parts.append(rng.choice(singles))
            elif kind < 0.55:
                parts.append(rng.choice(words))
            elif kind < 0.63:
                parts.append(rng.choice(contractions))
            elif kind < 0.71:
                parts.append(rng.choice(SPECIALS))
            elif kind < 0.77:
                parts.append(rng.choice(FRAGMENTS))
            elif kind < 0.84:
                parts.append(rng.choice([" ", "\t", "\n", " \n", "\u3000"]) * rng.randint(2, 20))
            elif kind < 0.87:
                parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(2, 20))))
            elif kind < 0.90:  # any code point: new Unicode versions, unassigned, private use, noncharacters
                parts.append("".join(chr(rng.choice([rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                                     for _ in range(rng.randint(1, 3))))
            else:
                parts.append(rng.choice(EMOJI) * rng.randint(1, 4))
        text = "".join(parts)
        if rng.random() < 0.09:
            data = bytearray(text.encode("utf-8"))
            for _ in range(rng.randint(1, 3)):
                junk = rng.choice([b"\xff", b"\xfe", b"\x80", b"\xbf\xbf", b"\xc0\xaf", b"\xc3", b"\xe2\x82",
                                   b"\xf0\x9f\x99", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\xaf", b"\xf8\x88"])
                at = rng.randint(0, len(data))
                data[at:at] = junk
            out.append(bytes(data))
        else:
            out.append(text)
    return out


def as_entry(text):
    return {"hex": text.hex()} if isinstance(text, bytes) else text


def hf_text(text):
    """What HF sees for a C++ input: invalid UTF-8 replaced by U+FFFD (maximal subparts, as Python's errors=replace)."""
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


# ---------------------------------------------------------------------------------------------------------------------


def roundtrip_default(seen, prefix_space):
    """What decode(encode(text)) gives when "decoded" is left out of a random entry (keeps the fixtures small)."""
    if prefix_space and seen and not seen.startswith(" "):
        return " " + seen
    return seen


def expected_for(tok, random_texts, rng, prefix_space):
    cases = []
    for text in HAND_CASES + INVALID_HAND_CASES:
        seen = hf_text(text)
        ids = tok.encode(seen, add_special_tokens=False).ids
        case = {"text": text} if isinstance(text, str) else {"hex": text.hex()}
        case.update({"ids": ids, "ids_with_special": tok.encode(seen, add_special_tokens=True).ids,
                     "decoded": tok.decode(ids, skip_special_tokens=False),
                     "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        cases.append(case)
    rand = []
    for i, text in enumerate(random_texts):
        seen = hf_text(text)
        ids = tok.encode(seen, add_special_tokens=False).ids
        entry = {"i": i, "ids": ids}
        decoded = tok.decode(ids, skip_special_tokens=False)
        if decoded != roundtrip_default(seen, prefix_space):
            entry["decoded"] = decoded
        rand.append(entry)
    n = tok.get_vocab_size(with_added_tokens=True)
    decode_cases = []
    for _ in range(100):
        ids = [rng.randrange(n) for _ in range(rng.randint(0, 12))]
        if rng.random() < 0.1:
            ids.insert(rng.randint(0, len(ids)), n + 1000)  # unknown id: skipped
        decode_cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                             "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    vocab = tok.get_vocab(with_added_tokens=True)
    probe = sorted(vocab.items(), key=lambda kv: kv[1])
    return {"tokenizers_version": tokenizers.__version__, "vocab_size": max(vocab.values()) + 1,
            "roundtrip": "prefix_space" if prefix_space else "exact",
            "token_to_id": {t: i for t, i in probe[:: max(1, len(probe) // 40)] + probe[-8:]},
            # HF decodes a normalized added token as its normalized content, and id_to_token says so too.
            "id_to_token": {str(i): tok.id_to_token(i) for _, i in probe[:: max(1, len(probe) // 40)] + probe[-8:]},
            "cases": cases, "random": rand, "decode": decode_cases}


def split(pattern, behavior, invert=False, literal=False):
    return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern}, "behavior": behavior,
            "invert": invert}


def template(single, specials):
    return {"type": "TemplateProcessing", "single": single, "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {name: {"id": name, "ids": [i], "tokens": [name]} for name, i in specials}}


def variants(folder_of):
    """Small changes to the fixture tokenizers that reach the options the five files do not use.

    Each is (name, base fixture, replaced top-level members, replaced model members); the C++ test applies the same
    changes to the base tokenizer.json, so no vocab is stored twice."""
    qwen_added = json.load(open(os.path.join(folder_of("qwen2_bytelevel"), "tokenizer.json")))["added_tokens"]
    n = qwen_added[0]["id"]
    no_prefix = bytelevel(False, False, False)
    return [
        ("split_removed", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r"\s+", "Removed"), no_prefix]}}, {}),
        ("split_string_merged_with_previous", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(" ", "MergedWithPrevious", literal=True), no_prefix]}}, {}),
        ("split_merged_with_next", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r"\p{P}", "MergedWithNext"), no_prefix]}}, {}),
        ("split_contiguous", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r"\p{N}", "Contiguous"), no_prefix]}}, {}),
        ("split_inverted", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r"\p{L}+", "Removed", invert=True), no_prefix]}}, {}),
        ("split_empty_matches", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split("x*|(?=a)", "Isolated"), no_prefix]}}, {}),
        ("split_onig_classes", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r"\w+|\d+|[\s\h]+|\S", "Isolated"), no_prefix]}}, {}),
        ("split_word_boundaries", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r"\\b", "Isolated"), no_prefix]}}, {}),
        ("split_dot", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(r".{1,3}", "Removed", invert=True), no_prefix]}}, {}),
        ("bytelevel_prefix_after_split", "qwen2_bytelevel", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(QWEN2_PATTERN, "Isolated"), bytelevel(True, False, False)]}}, {}),
        ("qwen2_chat_template", "qwen2_bytelevel", {"post_processor": {"type": "Sequence", "processors": [
            bytelevel(False, False, False),
            template([{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}],
                     [("<|im_start|>", n + 1), ("<|im_end|>", n + 2)])]}}, {}),
        ("nfc_normalized_added_token", "qwen2_bytelevel", {"added_tokens": qwen_added + [
            added(n + 5, "cafe\u0301", False, normalized=True), added(n + 6, "<sp\u0301>", True, normalized=True)]},
         {}),
        ("no_decoder_ignore_merges", "qwen2_bytelevel", {"decoder": None}, {"ignore_merges": True}),
        ("bert_processing", "gpt2_prefix", {"post_processor": {"type": "BertProcessing", "sep": ["</s>", 1],
                                                               "cls": ["<s>", 0]}}, {}),
        ("metaspace_always_split", "llama_metaspace", {"pre_tokenizer": {
            "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}}, {}),
        ("metaspace_never", "llama_metaspace", {
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": False},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": False},
                {"type": "ByteFallback"}, {"type": "Fuse"}]}}, {}),
        ("metaspace_legacy_add_prefix_space", "llama_metaspace", {
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
            "decoder": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}}, {}),
        ("replace_regex_and_strip", "mixtral_spm", {
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Replace", "pattern": {"Regex": "[ \t]+"}, "content": " "},
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"Regex": "\u2581+"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 2, "stop": 1}]}}, {}),
        ("unk_without_byte_fallback", "mixtral_spm", {}, {"byte_fallback": False, "fuse_unk": False}),
        ("unk_fused_without_byte_fallback", "mixtral_spm", {}, {"byte_fallback": False, "fuse_unk": True}),
        ("no_unk_no_byte_fallback", "mixtral_spm", {}, {"byte_fallback": False, "unk_token": None}),
    ]


@contextlib.contextmanager
def quiet_stderr():
    """Silences Rust's panic message (file descriptor 2) while HF is expected to panic."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def variant_expectations(folder_of):
    texts = [t for t in HAND_CASES if len(t) <= 40] + [t.decode("utf-8", errors="replace") for t in INVALID_HAND_CASES]
    out = {"texts": texts, "variants": []}
    for name, base, patch, model_patch in variants(folder_of):
        spec = json.load(open(os.path.join(folder_of(base), "tokenizer.json")))
        spec.update(patch)
        spec["model"].update(model_patch)
        tok = Tokenizer.from_str(json.dumps(spec))
        cases = []
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            case = {"ids": ids}
            if "post_processor" in patch:  # the other variants add special tokens as their base fixture does
                case["special"] = tok.encode(text, add_special_tokens=True).ids
            try:
                with quiet_stderr():
                    decoded = tok.decode(ids, skip_special_tokens=False)
                    skip = tok.decode(ids, skip_special_tokens=True)
            except BaseException:  # pyo3's PanicException: HF's Strip decoder panics on an empty text with stop > 0
                case["hf_panics"] = True
                cases.append(case)
                continue
            if decoded != text:
                case["decoded"] = decoded
            if skip != decoded:
                case["skip"] = skip
            cases.append(case)
        out["variants"].append({"name": name, "base": base, "patch": patch, "model_patch": model_patch,
                                "cases": cases})
    return out


def write_lines_json(path, obj, list_keys):
    """JSON with one list element per line for the big lists (readable diffs), compact elsewhere."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        keys = list(obj)
        for k, key in enumerate(keys):
            f.write(f"  {json.dumps(key)}: ")
            if key in list_keys:
                f.write("[\n" + ",\n".join("    " + json.dumps(x, ensure_ascii=False, separators=(",", ":"))
                                           for x in obj[key]) + "\n  ]")
            else:
                f.write(json.dumps(obj[key], ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if k + 1 < len(keys) else "\n")
        f.write("}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/tokenizer")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    corpus = make_corpus(random.Random(1234))
    words = sorted({w for line in corpus for w in line.split() if len(w) < 16})
    texts = random_strings(random.Random(5678), words)
    write_lines_json(os.path.join(args.out, "random_strings.json"),
                     {"count": len(texts), "strings": [as_entry(t) for t in texts]}, {"strings"})

    spm = spm_model(corpus)
    builders = {"qwen2_bytelevel": lambda: qwen2_bytelevel(corpus), "olmoe_bytelevel": lambda: olmoe_bytelevel(corpus),
                "gpt2_prefix": lambda: gpt2_prefix(corpus), "mixtral_spm": lambda: mixtral_spm(spm),
                "llama_metaspace": lambda: llama_metaspace(spm)}
    for name, build in builders.items():
        spec, config = build()
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "tokenizer.json")
        text = json.dumps(spec, ensure_ascii=False, indent=1)
        # One merge pair per line, as ["a", "b"] (the default puts each string on its own line).
        text = re.sub(r'\[\n\s*("(?:[^"\\]|\\.)*"),\n\s*("(?:[^"\\]|\\.)*")\n\s*\]', r"[\1, \2]", text)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        tok = Tokenizer.from_file(path)  # the expectations come from loading exactly the file written
        config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                          for t in spec["added_tokens"]}
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write("\n")
        prefix_space = (spec["pre_tokenizer"] or {}).get("add_prefix_space", False)
        expected = expected_for(tok, texts, random.Random(sum(map(ord, name))), prefix_space)
        write_lines_json(os.path.join(folder, "expected.json"), expected, {"cases", "random", "decode"})
        same = sum(1 for r in expected["random"] if "decoded" not in r)
        print(f"{name}: vocab {expected['vocab_size']}, {len(expected['cases'])} cases, {len(expected['random'])} random "
              f"({same} round-trip), {len(expected['decode'])} decode cases")

    variant_file = os.path.join(args.out, "variants.json")
    data = variant_expectations(lambda name: os.path.join(args.out, name))
    with open(variant_file, "w", encoding="utf-8") as f:
        f.write("{\n  \"texts\": " + json.dumps(data["texts"], ensure_ascii=False) + ",\n  \"variants\": [\n")
        f.write(",\n".join("    " + json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in data["variants"]))
        f.write("\n  ]\n}\n")
    print(f"variants: {len(data['variants'])} variants x {len(data['texts'])} texts")

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"total {total / 1e6:.2f} MB under {args.out}")
    if total > 1.5e6:
        sys.exit("fixtures exceed 1.5 MB: shrink RANDOM_COUNT or the vocab sizes")


if __name__ == "__main__":
    main()
