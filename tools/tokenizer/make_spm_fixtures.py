#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/spm_bpe/ and spm_unigram/: two small SentencePiece tokenizer.model files trained here
with the `sentencepiece` package, and the ids moetune must give for them.

Why: a model folder with only tokenizer.model is encoded by moetune through libsentencepiece plus Transformers'
special-token rules (src/tokenizer/sentencepiece_tokenizer.h). No model can be downloaded, so this script trains its own
on the corpus of make_fixtures.py:

  spm_bpe       Llama/Mistral-shaped: BPE, identity normalization, no whitespace folding, add_dummy_prefix, split_digits,
                byte_fallback, <unk>=0 <s>=1 </s>=2; tokenizer_config.json of a LlamaTokenizer (add_bos_token, legacy)
  spm_unigram   T5-shaped: unigram, whitespace folding (remove_extra_whitespaces; identity normalization, since
                T5's nmt_nfkc table alone is 240 KB), no byte fallback (unknown characters become <unk>), <pad>=0 </s>=1 <unk>=2, no BOS, user-defined pieces [INST] [/INST];
                tokenizer_config.json with add_bos_token=false, add_eos_token=true

expected.json holds, as in make_fixtures.py: `cases` (the hand-written texts: ids, ids with special tokens, decode and
decode(skip_special_tokens)), `random` (ids for every string of random_strings.json, `decoded` where the decode is not
the text) and `decode` (random id sequences). The ids are sentencepiece's own: the special-token strings (bos/eos/unk/pad)
are cut out of the text and every piece between them is `SentencePieceProcessor.encode`d on its own, BOS/EOS added as
the config says -- Transformers' slow tokenizer with legacy=true. Decoding: runs of ordinary ids through
`SentencePieceProcessor.decode`, special ids as their piece. When `transformers` is importable, the script also loads
spm_bpe with AutoTokenizer (Transformers v5 converts tokenizer.model to a tokenizers BPE) and records in expected.json
how many texts give the same ids; that count is information, not a test.

Needs `tokenizers` (for make_fixtures.py's corpus) and `sentencepiece` 0.1.99 (`pip install sentencepiece==0.1.99`:
the 0.1.9x line of Debian's libsentencepiece0 0.1.97 that moetune links; 0.2.x breaks ties between equal-score unigram
segmentations differently). The optional Transformers check needs protobuf and, for Transformers v5, sentencepiece>=0.2
(with 0.1.99 it is skipped; run once with 0.2.3 it found 2029 of 2093 texts with the same ids). Run from the repository root, after make_fixtures.py (it reads random_strings.json):

  /opt/hfref/bin/pip install sentencepiece==0.1.99 protobuf
  /opt/hfref/bin/python tools/tokenizer/make_spm_fixtures.py

Deterministic: the same sentencepiece version gives byte-identical files.
"""

import argparse
import io
import json
import os
import random
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (the corpus, the hand-written texts, the JSON writer)

SPM_HAND_CASES = ["<s>Hello</s>", "a<unk>b", " </s> x ", "<pad><pad>", "[INST] Hi [/INST]", "[INST][/INST]",
                  "   three leading spaces", "trailing   ", "ｆｕｌｌ　ｗｉｄｔｈ ①", "▁already▁metaspace"]


def train(corpus, **options):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=1000,
                                   max_sentence_length=100000, num_threads=1, minloglevel=2, **options)
    return model.getvalue()


def spm_bpe(corpus):
    proto = train(corpus, model_type="bpe", character_coverage=0.98, byte_fallback=True,
                  normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
                  split_digits=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": True,
              "model_max_length": 4096, "sp_model_kwargs": {},
              "added_tokens_decoder": {str(i): {k: v for k, v in mf.added(i, t, True, normalized=False).items() if k != "id"}
                                       for i, t in enumerate(["<unk>", "<s>", "</s>"])}}
    return proto, config


def spm_unigram(corpus):
    proto = train(corpus, model_type="unigram", character_coverage=0.98, byte_fallback=False,
                  normalization_rule_name="identity", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                  user_defined_symbols=["[INST]", "[/INST]"])
    config = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": False,
              "add_eos_token": True, "legacy": True, "model_max_length": 512}
    return proto, config


class Reference:
    """moetune's rule (sentencepiece_tokenizer.h), written with the sentencepiece package."""

    def __init__(self, proto, config):
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        roles = {"bos_token": self.sp.bos_id(), "eos_token": self.sp.eos_id(), "unk_token": self.sp.unk_id(),
                 "pad_token": self.sp.pad_id()}
        self.role = {}
        for key, model_id in roles.items():
            content = config[key] if key in config else (self.sp.id_to_piece(model_id) if model_id >= 0 else None)
            if content is not None:
                self.role[key] = content
        self.specials = sorted(set(self.role.values()), key=len, reverse=True)
        self.special_ids = {self.sp.piece_to_id(s) for s in self.specials}
        self.bos = self.sp.piece_to_id(self.role["bos_token"]) if config.get("add_bos_token", True) and \
            "bos_token" in self.role else None
        self.eos = self.sp.piece_to_id(self.role["eos_token"]) if config.get("add_eos_token", False) else None

    def encode(self, text, add_special_tokens=False):
        ids = [self.bos] if add_special_tokens and self.bos is not None else []
        done = 0
        while True:
            hits = [(text.find(s, done), -len(s), s) for s in self.specials if text.find(s, done) >= 0]
            if not hits:
                break
            at, _, special = min(hits)
            if at > done:
                ids += self.sp.encode(text[done:at])
            ids.append(self.sp.piece_to_id(special))
            done = at + len(special)
        if done < len(text):
            ids += self.sp.encode(text[done:])
        if add_special_tokens and self.eos is not None:
            ids.append(self.eos)
        return ids

    def decode(self, ids, skip_special_tokens=False):
        out, run = "", []
        for i in ids:
            if not 0 <= i < self.sp.get_piece_size():
                continue
            if i in self.special_ids:
                out += self.sp.decode(run) if run else ""
                run = []
                if not skip_special_tokens:
                    out += self.sp.id_to_piece(i)
            else:
                run.append(i)
        return out + (self.sp.decode(run) if run else "")


def expected_for(ref, random_texts, rng):
    cases = []
    for text in mf.HAND_CASES + SPM_HAND_CASES + mf.INVALID_HAND_CASES:
        seen = mf.hf_text(text)
        ids = ref.encode(seen)
        case = {"text": text} if isinstance(text, str) else {"hex": text.hex()}
        case.update({"ids": ids, "ids_with_special": ref.encode(seen, True), "decoded": ref.decode(ids),
                     "decoded_skip_special": ref.decode(ids, True)})
        cases.append(case)
    rows = []
    for i, text in enumerate(random_texts):
        seen = mf.hf_text(text)
        ids = ref.encode(seen)
        row = {"i": i, "ids": ids}
        decoded = ref.decode(ids)
        if decoded != seen:
            row["decoded"] = decoded
        rows.append(row)
    size = ref.sp.get_piece_size()
    decode = []
    for _ in range(100):
        ids = [rng.choice([rng.randrange(size), rng.randrange(size), rng.randrange(size), rng.randrange(3), size + 7,
                           rng.randrange(3, 3 + 256)]) for _ in range(rng.randint(0, 12))]
        decode.append({"ids": ids, "decoded": ref.decode(ids), "decoded_skip_special": ref.decode(ids, True)})
    samples = sorted(rng.sample(range(size), 40))
    return {"vocab_size": size, "special_ids": sorted(ref.special_ids),
            "token_to_id": {ref.sp.id_to_piece(i): i for i in samples},
            "id_to_token": {str(i): ref.sp.id_to_piece(i) for i in samples},
            "cases": cases, "random": rows, "decode": decode}


def transformers_agreement(folder, ref, texts):
    """How many texts Transformers' AutoTokenizer (v5: converted to a tokenizers BPE) encodes as moetune does."""
    try:
        import transformers
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # e.g. Transformers v5's converter needs sentencepiece >= 0.2
        print(f"Transformers could not load {folder}: {e}")
        return None
    seen = [mf.hf_text(t) for t in texts]
    same = sum(tok.encode(t, add_special_tokens=False) == ref.encode(t) for t in seen)
    same_special = sum(tok.encode(t) == ref.encode(t, True) for t in seen)
    return {"version": transformers.__version__, "class": type(tok).__name__, "texts": len(seen), "same_ids": same,
            "same_ids_with_special": same_special}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/tokenizer")
    args = parser.parse_args()
    corpus = mf.make_corpus(random.Random(1234))
    strings = json.load(open(os.path.join(args.out, "random_strings.json"), encoding="utf-8"))["strings"]
    random_texts = [s if isinstance(s, str) else bytes.fromhex(s["hex"]) for s in strings]
    for name, build in [("spm_bpe", spm_bpe), ("spm_unigram", spm_unigram)]:
        proto, config = build(corpus)
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
            f.write(proto)
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write("\n")
        ref = Reference(proto, config)
        expected = expected_for(ref, random_texts, random.Random(sum(map(ord, name))))
        expected["sentencepiece_version"] = spm.__version__
        if name == "spm_bpe":
            agreement = transformers_agreement(folder, ref, random_texts + mf.HAND_CASES)
            if agreement:
                expected["transformers"] = agreement
                print(f"{name}: Transformers {agreement}")
        mf.write_lines_json(os.path.join(folder, "expected.json"), expected, {"cases", "random", "decode"})
        same = sum(1 for r in expected["random"] if "decoded" not in r)
        print(f"{name}: vocab {expected['vocab_size']}, {len(expected['cases'])} cases, {len(expected['random'])} random "
              f"({same} round-trip), {len(expected['decode'])} decode cases, model {len(proto)} bytes")


if __name__ == "__main__":
    main()
