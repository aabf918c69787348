#!/usr/bin/env python3
"""Tokenizer throughput: moetune's C++ tokenizer vs Hugging Face `tokenizers`, one core and all cores, same text, same ids.

Why: issue 5 asks for the tokenizer's MB/s per core against the Python package on the same text (docs/PERFORMANCE.md),
at a realistic size: a byte-level BPE of 32k-64k tokens shaped like Qwen's (NFC, Qwen's Split regex, ByteLevel; the
tools/tokenizer/make_fixtures.py recipe) on hundreds of MB of multilingual text. Nothing is downloaded: the text is
generated here (seeded, so every run writes the same bytes) and the tokenizer is trained on a slice of it.

  python3 tools/bench/tokenizer_throughput.py --moetune build/moetune                  # 300 MB, all cores
  python3 tools/bench/tokenizer_throughput.py --moetune build/moetune --megabytes 2 --train-megabytes 1 --vocab-size 4000

Steps: writes OUT/corpus.txt (kept when OUT/corpus.json says it has the same size and seed), trains OUT/model/
tokenizer.json, then times, each on every line of the corpus (split on '\\n', encoded without special tokens):
  moetune  `moetune tokenize --benchmark` with --threads 1 and --threads N;
  HF       encode_batch(lines) in a subprocess with RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false, and with
           RAYON_NUM_THREADS=N, TOKENIZERS_PARALLELISM=true (rayon sizes its pool once per process);
each --repeat times (best reported; the first run, cold word caches, shown too). All four id streams must be identical
(exit status 1 otherwise, naming the first differing line). Prints a table and writes OUT/results.json.
"""

import argparse
import array
import bisect
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokenizer"))

SYLLABLES = {
    "latin": ["ka", "to", "ri", "mon", "sel", "ver", "an", "di", "que", "str", "ung", "ent", "pro", "lo", "ba", "zen",
              "tion", "ic", "al", "er", "sch", "ch", "ei", "au", "th", "ing", "ou", "ph", "ly", "ness", "é", "ü", "ß"],
    "cyrillic": ["ка", "то", "ри", "мон", "ве", "ан", "ди", "ст", "ен", "про", "ло", "ба", "ость", "ия", "ый"],
    "greek": ["κα", "το", "ρι", "μον", "σε", "αν", "δι", "στ", "εν", "προ", "λο", "βα", "ος", "ης"],
    "hangul": ["안", "녕", "하", "세", "요", "세", "계", "학", "습", "모", "델", "데", "이", "터"],
    "devanagari": ["न", "म", "स्", "ते", "दु", "नि", "या", "क", "र", "ना", "है"],
}
LANGUAGE_WEIGHTS = {"latin": 0.6, "cyrillic": 0.12, "greek": 0.06, "hangul": 0.12, "devanagari": 0.1}


def make_vocabulary(rng):
    """60k synthetic words over several scripts with Zipf weights: many distinct words, so BPE caches stay busy."""
    scripts = list(LANGUAGE_WEIGHTS)
    words = []
    for _ in range(60000):
        script = rng.choices(scripts, [LANGUAGE_WEIGHTS[s] for s in scripts])[0]
        words.append("".join(rng.choice(SYLLABLES[script]) for _ in range(rng.randint(1, 4))))
    cumulative, total = [], 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1)
        cumulative.append(total)
    return words, cumulative


def make_line(rng, fx, words, cumulative, cjk):
    pools = fx.ENGLISH + fx.GERMAN + fx.CHINESE + fx.JAPANESE + fx.ARABIC + fx.OTHER
    parts = []
    for _ in range(rng.randint(3, 12)):
        kind = rng.random()
        if kind < 0.45:
            picks = (words[bisect.bisect_left(cumulative, rng.random() * cumulative[-1])] for _ in range(rng.randint(3, 15)))
            parts.append(" ".join(picks) + rng.choice([".", ",", "!", "?", ":", ";"]))
        elif kind < 0.70:
            parts.append(rng.choice(pools))
        elif kind < 0.78:
            parts.append(rng.choice(fx.CODE).replace("\n", " "))
        elif kind < 0.87:
            parts.append("".join(rng.choice(cjk) for _ in range(rng.randint(4, 30))) + "。")
        elif kind < 0.94:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 15))))
        else:
            parts.append(rng.choice(fx.EMOJI) + rng.choice([" ", "  ", "\t"]))
    return " ".join(parts)


def write_corpus(path, megabytes, seed):
    """Writes lines until `megabytes` MB; returns the byte count. Deterministic for (megabytes, seed)."""
    import make_fixtures as fx
    rng = random.Random(seed)
    words, cumulative = make_vocabulary(rng)
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    target, size = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        while size < target:
            line = make_line(rng, fx, words, cumulative, cjk) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
    return size


def train_tokenizer(corpus_path, folder, train_megabytes, vocab_size):
    """Qwen2-shaped byte-level BPE (make_fixtures.py's recipe) trained on the first train_megabytes of the corpus."""
    import make_fixtures as fx
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    with open(corpus_path, encoding="utf-8") as f:
        sample = f.read(int(train_megabytes * 1e6)).split("\n")
    split = pre_tokenizers.Split(Regex(fx.QWEN2_PATTERN), behavior="isolated", invert=False)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False)
    spec = fx.trained_bytelevel(sample, pre_tokenizers.Sequence([split, byte_level]), normalizers.NFC(), vocab_size)
    n = len(spec["model"]["vocab"])
    spec["added_tokens"] = [fx.added(n, "<|endoftext|>", True), fx.added(n + 1, "<|im_start|>", True),
                            fx.added(n + 2, "<|im_end|>", True)]
    spec["post_processor"] = fx.bytelevel(False, False, False)
    spec["decoder"] = fx.bytelevel(False, False, False)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    return Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).get_vocab_size()


def read_lines(path):
    """The corpus split on '\\n'; the final newline does not start one more line (moetune's rule too)."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def hf_worker(args):
    """Runs in a subprocess whose environment fixes rayon's threads: times encode_batch, writes the ids."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(os.path.join(args.out, "model", "tokenizer.json"))
    lines = read_lines(os.path.join(args.out, "corpus.txt"))
    seconds, encodings = [], None
    for _ in range(args.repeat):
        encodings = None
        start = time.perf_counter()
        encodings = tokenizer.encode_batch(lines, add_special_tokens=False)
        seconds.append(time.perf_counter() - start)
    ids = array.array("I")
    for encoding in encodings:
        ids.extend(encoding.ids)
    if sys.byteorder != "little":
        ids.byteswap()
    with open(args.hf_worker_ids, "wb") as f:
        ids.tofile(f)
    print(json.dumps({"seconds": seconds, "tokens": len(ids), "lines": len(lines)}))


def run_hf(args, threads, ids_path):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false" if threads == 1 else "true")
    command = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--repeat", str(args.repeat),
               "--hf-worker-ids", ids_path]
    result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_moetune(args, threads, ids_path):
    command = [args.moetune, "tokenize", "--tokenizer", os.path.join(args.out, "model"), "--benchmark",
               os.path.join(args.out, "corpus.txt"), "--threads", str(threads), "--repeat", str(args.repeat),
               "--ids", ids_path]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def first_difference(path_a, path_b, lines_path, tokenizer_folder):
    """Index of the first differing id and the line it falls in (re-encoded with HF to find the line)."""
    a, b = array.array("I"), array.array("I")
    with open(path_a, "rb") as f:
        a.frombytes(f.read())
    with open(path_b, "rb") as f:
        b.frombytes(f.read())
    index = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(os.path.join(tokenizer_folder, "tokenizer.json"))
    seen = 0
    for number, line in enumerate(read_lines(lines_path)):
        seen += len(tokenizer.encode(line, add_special_tokens=False).ids)
        if seen > index:
            return index, number, line
    return index, None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/moetune_tokenizer_throughput")
    parser.add_argument("--moetune", default="build/moetune", help="the moetune binary")
    parser.add_argument("--megabytes", type=float, default=300.0, help="corpus size")
    parser.add_argument("--train-megabytes", type=float, default=30.0, help="corpus slice the tokenizer is trained on")
    parser.add_argument("--vocab-size", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="the all-cores runs' threads (0: os.cpu_count())")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per measurement (best reported)")
    parser.add_argument("--hf-worker-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_worker_ids:
        hf_worker(args)
        return 0
    os.makedirs(args.out, exist_ok=True)
    threads = args.threads or os.cpu_count()

    corpus_path, corpus_meta = os.path.join(args.out, "corpus.txt"), os.path.join(args.out, "corpus.json")
    wanted = {"megabytes": args.megabytes, "seed": args.seed}
    if not (os.path.exists(corpus_path) and os.path.exists(corpus_meta) and json.load(open(corpus_meta)).get("params") == wanted):
        start = time.time()
        size = write_corpus(corpus_path, args.megabytes, args.seed)
        with open(corpus_meta, "w") as f:
            json.dump({"params": wanted, "bytes": size}, f)
        print(f"corpus: {size / 1e6:.1f} MB written in {time.time() - start:.0f} s -> {corpus_path}", flush=True)
    nbytes = os.path.getsize(corpus_path)

    start = time.time()
    vocab = train_tokenizer(corpus_path, os.path.join(args.out, "model"), args.train_megabytes, args.vocab_size)
    print(f"tokenizer: byte-level BPE, vocab {vocab}, trained on {args.train_megabytes:g} MB in "
          f"{time.time() - start:.0f} s -> {os.path.join(args.out, 'model', 'tokenizer.json')}", flush=True)

    runs = []
    for engine, count in [("moetune", 1), ("moetune", threads), ("HF tokenizers", 1), ("HF tokenizers", threads)]:
        ids_path = os.path.join(args.out, f"{engine.split()[0].lower()}.{count}.ids")
        result = (run_moetune if engine == "moetune" else run_hf)(args, count, ids_path)
        best = min(result["seconds"])
        runs.append({"engine": engine, "threads": count, "seconds": result["seconds"], "tokens": result["tokens"],
                     "mb_per_s": nbytes / 1e6 / best, "mb_per_s_per_core": nbytes / 1e6 / best / count,
                     "cold_mb_per_s": nbytes / 1e6 / result["seconds"][0], "ids": ids_path})
        print(f"  {engine:14s} {count:3d} threads: {runs[-1]['mb_per_s']:8.2f} MB/s", flush=True)

    reference = runs[2]["ids"]
    with open(reference, "rb") as f:
        reference_bytes = f.read()
    mismatches = []
    for run in runs:
        with open(run["ids"], "rb") as f:
            run["ids_identical"] = f.read() == reference_bytes
        if not run["ids_identical"]:
            index, number, line = first_difference(run["ids"], reference, corpus_path, os.path.join(args.out, "model"))
            mismatches.append(f"{run['engine']} ({run['threads']} threads) differs from HF (1 thread) at id {index}, "
                              f"line {number}: {line!r}")

    print(f"\n{nbytes / 1e6:.1f} MB, {runs[2]['tokens']} tokens, vocab {vocab}, best of {args.repeat} "
          f"(cold = first run)")
    print(f"{'engine':14s} {'threads':>7s} {'MB/s':>9s} {'MB/s/core':>10s} {'cold MB/s':>10s}  ids")
    for run in runs:
        print(f"{run['engine']:14s} {run['threads']:7d} {run['mb_per_s']:9.2f} {run['mb_per_s_per_core']:10.2f} "
              f"{run['cold_mb_per_s']:10.2f}  {'identical' if run['ids_identical'] else 'DIFFERENT'}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"bytes": nbytes, "vocab": vocab, "repeat": args.repeat, "runs": runs}, f, indent=2)
    for line in mismatches:
        print("error: " + line, file=sys.stderr)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
