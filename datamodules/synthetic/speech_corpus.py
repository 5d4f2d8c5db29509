"""The generated phoneme corpus: English sentences from the Python documentation that ships with the standard
library (`pydoc_data.topics`), spoken by espeak-ng (synthetic/espeak.py) with several accents and voice variants,
rate and pitch drawn per utterance; cached on disk, keyed by every parameter."""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import random
import re
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from datamodules.base import cache_root

CORPUS_VERSION = 1  # bump when the generation changes, so old caches are not reused



def english_sentences(min_words: int = 3, max_words: int = 14) -> list[str]:
    """Plain-English sentences (and clauses of longer ones) from the stdlib's pydoc topics, sorted, unique."""
    import pydoc_data.topics

    found: set[str] = set()
    for key in sorted(pydoc_data.topics.topics):
        for para in re.split(r"\n\s*\n", pydoc_data.topics.topics[key]):
            if para.startswith((" ", "\t", "*", "-", "=")) or ">>>" in para:
                continue  # code blocks, headings, lists
            para = re.sub(r"\s*\([^()]*\)", "", " ".join(para.replace('"', "").split()))
            for sentence in re.split(r"(?<=[.!?;:])\s+", para):
                sentence = sentence.strip().rstrip(".!?;:").strip()
                pieces = [sentence] if len(sentence.split()) <= max_words else re.split(r",\s+", sentence)
                for piece in pieces:
                    if re.fullmatch(r"[A-Za-z][A-Za-z0-9' ,]*[A-Za-z0-9]", piece) and all(
                        re.fullmatch(r"[A-Za-z0-9]+(?:'[a-z]+)?,?", w) for w in piece.split()
                    ) and min_words <= len(piece.split()) <= max_words:
                        found.add(piece)
    return sorted(found)


def cache_dir() -> str:
    return cache_root("phonemes")


def generate_corpus(
    counts: dict[str, int],
    voices: Sequence[str],
    variants: dict[str, Sequence[str]],
    rate_range: tuple[int, int],
    pitch_range: tuple[int, int],
    sample_rate: int,
    seed: int,
    splits: Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """Speak `counts[split]` utterances per split (of `splits`, default all); each split cached on its own under
    `cache_dir()`, keyed by every parameter, so evaluation speaks only the split it reads. Each split is drawn
    from its own seed, so a split is the same whichever others are generated with it.

    Returns {split: [{"audio": (S,) int16 tensor, "phonemes", "starts", "speaker", "text"}]}.
    """
    from datamodules.synthetic.espeak import Synthesizer

    sentences = english_sentences()
    params = dict(version=CORPUS_VERSION, counts=counts, voices=list(voices), variants={k: list(v) for k, v in variants.items()},
                  rate_range=list(rate_range), pitch_range=list(pitch_range), sample_rate=sample_rate, seed=seed,
                  sentences=hashlib.sha1("\n".join(sentences).encode()).hexdigest())
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    wanted = list(counts) if splits is None else list(splits)
    combined = os.path.join(cache_dir(), f"espeak-{key}.pt")  # the layout before per-split files
    if os.path.isfile(combined):
        stored = torch.load(combined, weights_only=False)["splits"]
        return {split: stored[split] for split in wanted}
    out: dict[str, list[dict]] = {}
    for split in wanted:
        path = os.path.join(cache_dir(), f"espeak-{key}-{split}.pt")
        if os.path.isfile(path):
            out[split] = torch.load(path, weights_only=False)["utterances"]
    missing = [split for split in wanted if split not in out]
    if not missing:
        return out
    # sentence-disjoint splits: 10 % of the sentences for validation, 15 % for test
    rng = random.Random(seed)
    order = sentences[:]
    rng.shuffle(order)
    n_val, n_test = len(order) // 10, len(order) * 15 // 100
    pools = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    synth = Synthesizer.get()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: extra threads only spin (10x slower on a busy 2-core machine)
    os.makedirs(cache_dir(), exist_ok=True)
    try:
        for split in missing:
            out[split] = _speak_split(synth, pools[split], counts[split], voices, variants[split], rate_range,
                                      pitch_range, sample_rate, f"{seed}-{split}", f"espeak-ng: speaking the {split} split")
            path = os.path.join(cache_dir(), f"espeak-{key}-{split}.pt")
            tmp = f"{path}.tmp{os.getpid()}"
            torch.save({"params": params, "split": split, "utterances": out[split]}, tmp)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
    finally:
        torch.set_num_threads(threads)
    return {split: out[split] for split in wanted}


def _speak_split(synth, pool, n, voices, variants, rate_range, pitch_range, sample_rate, seed, what) -> list[dict]:
    """n utterances: the pool's sentences in turn (then drawn at random), each by a random accent + variant
    (with a progress bar on stderr: the training split takes about a minute)."""
    rng = random.Random(seed)
    items = []
    for i in tqdm(range(n), desc=what, unit="utt", leave=False, disable=n < 200):
        text = pool[i] if i < len(pool) else rng.choice(pool)
        accent, variant = rng.choice(list(voices)), rng.choice(list(variants))
        speaker = f"{accent}+{variant}" if variant else accent
        utt = synth.speak(text, speaker, rng.randint(*rate_range), rng.randint(*pitch_range), sample_rate)
        audio = (utt.audio.clamp(-1, 1) * 32767).round().to(torch.int16)
        items.append(dict(audio=audio, phonemes=utt.phonemes, starts=utt.starts, speaker=speaker, text=text))
    return items


@functools.lru_cache(maxsize=1)
def phoneme_legend() -> dict[str, tuple[str, str]]:
    """espeak-ng label -> (its IPA symbol, an English example word), from espeak-ng's own transcriber (mnemonics and
    IPA side by side, `Synthesizer.transcribe`) over the corpus's words: the IPA a label is written as most often,
    and the most frequent word containing it. Computed once in a child process and cached on disk: espeak-ng's
    transcriber leaves the library in a state in which the next synthesis drops words ("the cat" spoken as "cat"),
    so it never runs in a process that speaks."""
    path = os.path.join(cache_dir(), f"legend-{CORPUS_VERSION}.json")
    if not os.path.isfile(path):
        import subprocess
        import sys

        code = "import json, sys; from datamodules.synthetic.speech_corpus import _transcribe_legend; " \
               "json.dump(_transcribe_legend(), sys.stdout)"
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(done.stdout)
        os.replace(tmp, path)
    with open(path, encoding="utf-8") as f:
        return {label: tuple(v) for label, v in json.load(f).items()}


def _transcribe_legend() -> dict[str, tuple[str, str]]:
    """`phoneme_legend`'s work, in the child process."""
    from datamodules.synthetic.espeak import Synthesizer

    synth = Synthesizer.get()
    words = collections.Counter(w for s in english_sentences() for w in re.findall(r"[a-z]+", s.lower()) if len(w) > 1)
    symbols: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    examples: dict[str, str] = {}
    for word, _ in words.most_common():  # most frequent first: the first word seen is the example
        for _, label, ipa in synth.transcribe(word):
            symbols[label][ipa] += 1
            examples.setdefault(label, word)
    return {label: (counts.most_common(1)[0][0], examples[label]) for label, counts in sorted(symbols.items())}
