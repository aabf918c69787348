#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/spm_bpe/, spm_unigram/ and spm_variants.json: two small SentencePiece tokenizer.model
files trained here with the `sentencepiece` package, and the ids Transformers 5.17 gives for them.

Why: a model folder with a tokenizer.model and no tokenizer.json is loaded by Transformers 5 as a `tokenizers`
tokenizer converted from the SentencePiece model (which conversion depends on tokenizer_config.json's tokenizer_class
and config.json's model_type); moetune converts it the same way (src/tokenizer/sentencepiece_conversion.h) and must
give the same ids. No model can be downloaded, so this script trains its own on the corpus of make_fixtures.py:

  spm_bpe       Llama/Mistral-shaped: BPE, identity normalization, no whitespace folding, add_dummy_prefix, split_digits,
                byte_fallback, <unk>=0 <s>=1 </s>=2; tokenizer_config.json of a LlamaTokenizer (add_bos_token,
                legacy=true), no config.json: Transformers' LlamaTokenizer (Metaspace, prepend_scheme "always")
  spm_unigram   unigram, identity normalization, no byte fallback (unknown characters become <unk>), <pad>=0 </s>=1
                <unk>=2, no BOS, user-defined pieces [INST] [/INST]; the folder of a Mixtral-architecture model
                (config.json model_type "mixtral", tokenizer_class LlamaTokenizer, add_eos_token): Transformers picks its
                generic TokenizersBackend for model_type mixtral, which converts the unigram model as it is

expected.json holds, as in make_fixtures.py: `cases` (the hand-written texts: ids, ids with special tokens, decode and
decode(skip_special_tokens)), `random` (ids for every string of random_strings.json, `decoded` where the decode is not
the text) and `decode` (random id sequences), all from `AutoTokenizer.from_pretrained(folder)`; `converted` is the
converted tokenizer as Transformers serializes it (backend_tokenizer.to_str()) without the vocabulary (the merges are
kept). spm_variants.json: the same model files with other tokenizer_config.json / config.json /
special_tokens_map.json files (legacy unset, add_prefix_space=false, a mixtral config.json, no config at all,
Llama-2-style AddedToken dicts, stripping flags, additional_special_tokens, a special_tokens_map.json, LlamaTokenizer
over the unigram model, tokens beyond the pieces), each with Transformers' class, converted tokenizer
and ids for the hand-written texts about whitespace, prefixes and special tokens.

Needs transformers 5.17.0, tokenizers 0.23.3, sentencepiece 0.2.3 and protobuf. Run from the repository root, after
make_fixtures.py (it reads random_strings.json):

  /opt/hfref/bin/pip install transformers==5.17.0 tokenizers==0.23.3 sentencepiece==0.2.3 protobuf
  /opt/hfref/bin/python tools/tokenizer/make_spm_fixtures.py

Deterministic: the same package versions give byte-identical files.
"""

import argparse
import io
import json
import os
import random
import sys
import tempfile
import warnings

import sentencepiece as spm
import transformers
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (the corpus, the hand-written texts, the JSON writer)

SPM_HAND_CASES = ["<s>Hello</s>", "a<unk>b", " </s> x ", "<pad><pad>", "[INST] Hi [/INST]", "[INST][/INST]",
                  "   three leading spaces", "trailing   ", "ｆｕｌｌ　ｗｉｄｔｈ ①", "▁already▁metaspace", " x", "<s> Hi",
                  "<s>Hi", "</s>  two", " <s>", "▁", "▁<s>▁x", "a<s>▁b", " [INST]x", "<unk> <unk>", "x</s>"]

LLAMA2_TOKEN = {"__type": "AddedToken", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def train(corpus, **options):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=1000,
                                   max_sentence_length=100000, num_threads=1, minloglevel=2, **options)
    return model.getvalue()


def added_decoder(tokens, **flags):
    return {str(i): {"content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                     "special": True, **flags.get(t, {})} for i, t in tokens}


def spm_bpe(corpus):
    proto = train(corpus, model_type="bpe", character_coverage=0.98, byte_fallback=True,
                  normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
                  split_digits=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": True,
              "model_max_length": 4096, "sp_model_kwargs": {}, "clean_up_tokenization_spaces": False,
              "added_tokens_decoder": added_decoder(enumerate(["<unk>", "<s>", "</s>"]))}
    return proto, config, None


def spm_unigram(corpus):
    proto = train(corpus, model_type="unigram", character_coverage=0.98, byte_fallback=False,
                  normalization_rule_name="identity", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                  user_defined_symbols=["[INST]", "[/INST]"])
    config = {"tokenizer_class": "LlamaTokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
              "add_bos_token": False, "add_eos_token": True, "legacy": True, "model_max_length": 512}
    model_config = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 1000}
    return proto, config, model_config


def variants(configs):
    """(name, base folder, tokenizer_config.json, config.json, special_tokens_map.json); None leaves a file out."""
    bpe, _ = configs["spm_bpe"]
    unigram, mixtral = configs["spm_unigram"]
    without = lambda config, *keys: {k: v for k, v in config.items() if k not in keys}  # noqa: E731
    llama2 = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": True, "legacy": False,
              "pad_token": None, "clean_up_tokenization_spaces": False, "sp_model_kwargs": {},
              **{key: {**LLAMA2_TOKEN, "content": t} for key, t in
                 [("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>")]}}
    stripped = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": False,
                "added_tokens_decoder": added_decoder(enumerate(["<unk>", "<s>", "</s>"]),
                                                      **{"<s>": {"lstrip": True}, "</s>": {"rstrip": True}})}
    token_map = {"bos_token": {"content": "<s>", "lstrip": True, "normalized": False}, "pad_token": "<unk>",
                 "additional_special_tokens": ["<0x41>"]}
    return [
        ("bpe_legacy_unset", "spm_bpe", without(bpe, "legacy"), None, None),
        ("bpe_no_prefix_space", "spm_bpe", {**bpe, "add_prefix_space": False}, None, None),
        ("bpe_mixtral_folder", "spm_bpe", bpe, mixtral, None),
        ("bpe_no_config", "spm_bpe", None, None, None),
        ("bpe_llama2_config", "spm_bpe", llama2, None, None),
        ("bpe_strip_flags", "spm_bpe", stripped, None, None),
        ("bpe_additional_specials", "spm_bpe", {**without(bpe, "added_tokens_decoder"),
                                                "additional_special_tokens": ["<0x41>", "▁▁"], "sep_token": "</s>"},
         None, None),
        ("bpe_special_tokens_map", "spm_bpe", without(bpe, "added_tokens_decoder"), None, token_map),
        ("unigram_no_config", "spm_unigram", None, None, None),
        ("unigram_additional_specials", "spm_unigram", {**without(unigram, "tokenizer_class"),
                                                        "additional_special_tokens": ["[INST]"]}, None, None),
        ("unigram_llama_class", "spm_unigram", {**unigram, "bos_token": None}, None, None),
        # LlamaTokenizer's default "<s>" and a custom "*_token" are not pieces: they follow the 1000 pieces.
        ("unigram_llama_new_tokens", "spm_unigram", {**unigram, "add_bos_token": True, "image_token": "<image>"},
         None, None),
    ]


def write_folder(folder, proto, config, model_config, token_map=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(proto)
    for name, content in [("tokenizer_config.json", config), ("config.json", model_config),
                          ("special_tokens_map.json", token_map)]:
        path = os.path.join(folder, name)
        if content is None:
            if os.path.exists(path):
                os.remove(path)
            continue
        with open(path, "w", encoding="utf-8") as f:
            json.dump(content, f, ensure_ascii=False, indent=2)
            f.write("\n")


def load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(folder)


def converted(tok, keep_merges):
    """The converted tokenizer as Transformers serializes it, without the vocabulary (and merges unless asked)."""
    data = json.loads(tok.backend_tokenizer.to_str())
    data["model"].pop("vocab", None)
    if not keep_merges:
        data["model"].pop("merges", None)
    return data


def special_ids(tok):
    """Ids decode(skip_special_tokens=True) drops: the added tokens the backend holds as special."""
    backend = tok.backend_tokenizer
    return sorted(i for i in backend.get_added_tokens_decoder() if backend.decode([i], skip_special_tokens=True) == ""
                  and backend.decode([i], skip_special_tokens=False) != "")


def hand_cases():
    return mf.HAND_CASES + SPM_HAND_CASES + mf.INVALID_HAND_CASES


def variant_texts():
    """The hand-written texts about whitespace, prefixes and special tokens (what the variants change), and a few more."""
    about = [t for t in mf.HAND_CASES if t.strip() == "" or any(c in t for c in "<[▁") or t[:1] == " " or t[-1:] == " "]
    return about + SPM_HAND_CASES + ["Hello world", "我们正在训练一个混合专家模型。", "🙂🙂🙂 e\u0301", b"<s>\xfe</s>"]


def case_ids(tok, text):
    seen = mf.hf_text(text)
    ids = tok.encode(seen, add_special_tokens=False)
    return {"ids": ids, "ids_with_special": tok.encode(seen, add_special_tokens=True),
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)}


def expected_for(tok, random_texts, rng, keep_merges):
    cases = []
    for text in hand_cases():
        case = {"text": text} if isinstance(text, str) else {"hex": text.hex()}
        case.update(case_ids(tok, text))
        cases.append(case)
    rows = []
    for i, text in enumerate(random_texts):
        seen = mf.hf_text(text)
        ids = tok.encode(seen, add_special_tokens=False)
        row = {"i": i, "ids": ids}
        decoded = tok.decode(ids)
        if decoded != seen:
            row["decoded"] = decoded
        rows.append(row)
    size = len(tok)
    decode = []
    for _ in range(100):
        ids = [rng.choice([rng.randrange(size), rng.randrange(size), rng.randrange(size), rng.randrange(5), size + 7,
                           rng.randrange(3, 3 + 256)]) for _ in range(rng.randint(0, 12))]
        decode.append({"ids": ids, "decoded": tok.decode(ids), "decoded_skip_special": tok.decode(ids, True)})
    samples = sorted(rng.sample(range(size), 40))
    return {"transformers_version": transformers.__version__, "sentencepiece_version": spm.__version__,
            "class": type(tok).__name__, "vocab_size": size, "special_ids": special_ids(tok),
            "token_to_id": {tok.convert_ids_to_tokens(i): i for i in samples},
            "id_to_token": {str(i): tok.convert_ids_to_tokens(i) for i in samples},
            "converted": converted(tok, keep_merges), "cases": cases, "random": rows, "decode": decode}


def variant_expectations(out, protos, configs):
    rows = []
    for name, base, config, model_config, token_map in variants(configs):
        with tempfile.TemporaryDirectory() as folder:
            write_folder(folder, protos[base], config, model_config, token_map)
            tok = load(folder)
            rows.append({"name": name, "base": base, "tokenizer_config": config, "config": model_config,
                         "special_tokens_map": token_map,
                         "class": type(tok).__name__, "special_ids": special_ids(tok),
                         "converted": converted(tok, keep_merges=False),
                         "cases": [case_ids(tok, text) for text in variant_texts()]})
        print(f"variant {name}: {rows[-1]['class']}")
    texts = [mf.as_entry(text) for text in variant_texts()]
    mf.write_lines_json(os.path.join(out, "spm_variants.json"),
                        {"transformers_version": transformers.__version__, "texts": texts, "variants": rows},
                        {"variants"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/tokenizer")
    args = parser.parse_args()
    corpus = mf.make_corpus(random.Random(1234))
    strings = json.load(open(os.path.join(args.out, "random_strings.json"), encoding="utf-8"))["strings"]
    random_texts = [s if isinstance(s, str) else bytes.fromhex(s["hex"]) for s in strings]
    protos, configs = {}, {}
    for name, build in [("spm_bpe", spm_bpe), ("spm_unigram", spm_unigram)]:
        proto, config, model_config = build(corpus)
        protos[name], configs[name] = proto, (config, model_config)
        folder = os.path.join(args.out, name)
        write_folder(folder, proto, config, model_config)
        tok = load(folder)
        expected = expected_for(tok, random_texts, random.Random(sum(map(ord, name))), keep_merges=True)
        mf.write_lines_json(os.path.join(folder, "expected.json"), expected, {"cases", "random", "decode"})
        same = sum(1 for r in expected["random"] if "decoded" not in r)
        print(f"{name}: {expected['class']}, vocab {expected['vocab_size']}, {len(expected['cases'])} cases, "
              f"{len(expected['random'])} random ({same} round-trip), model {len(proto)} bytes")
    variant_expectations(args.out, protos, configs)


if __name__ == "__main__":
    main()
