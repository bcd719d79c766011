"""Generated workloads shaped like the real ones, shared by ``mteb-vllm bench`` and every benchmark script.

Why generated: mteb's tasks download from the Hugging Face hub, which this project's machines cannot reach.
Why shaped with care: a benchmark of 200-word texts says little about STS, where real test sets average 8-12
words a sentence and reuse sentences across pairs (STS12: 3,108 pairs over 2,236 unique first sentences), and
a vocabulary of one-token words makes a tokenizer look faster than it is. So:

- :func:`sts_tasks` builds three STS tasks the size of STS12 (3,108 pairs), STS13 (1,500) and SICK-R (9,927),
  sentences of 4-30 words (mean about 10), with sentences reused across pairs like the real sets, in common
  English words (with the full stop, about 1.2 WordPiece tokens per word on MiniLM's tokenizer);
- :func:`variable_texts` gives 5-200 words (the throughput workload of earlier benchmarks, kept comparable);
- :func:`fixed_texts` gives texts of an exact token count on a BERT WordPiece tokenizer (one-token words).

Everything is seeded: the same call gives the same texts on every machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Words that are one WordPiece token each on BERT-style vocabularies (fixed-length workloads).
SINGLE_TOKEN_WORDS = (
    "time people year way day thing man world life hand part child eye woman place work week case point "
    "government company number group problem fact river model music data search engine house city water "
    "night room mother area money story month book job word business issue side kind head").split()

#: Common English words, with the long and rare ones prose has, for sentences that tokenize like real text.
ENGLISH = (
    "the a an of to in and is was for on with as by at from that this it his her their its they he she we you "
    "man woman child children people dog dogs cat cats horse bird birds fish ball car cars bike train plane "
    "boat street road city town village house home room kitchen garden park beach river lake sea mountain "
    "forest field school office market store restaurant hospital church station bridge table chair bed door "
    "window guitar piano drum song music movie book letter phone computer camera picture photo map water "
    "food bread cheese pizza pasta rice soup coffee tea apple orange tomato onion meat egg cake sugar salt "
    "is are was were be been being has have had do does did will would can could should may might must "
    "plays playing played runs running ran walks walking walked sits sitting sat stands standing stood eats "
    "eating ate drinks drinking drank cooks cooking cooked reads reading read writes writing wrote sings "
    "singing sang dances dancing danced rides riding rode drives driving drove jumps jumping jumped swims "
    "swimming swam climbs climbing climbed throws throwing threw catches catching caught holds holding held "
    "looks looking looked watches watching watched talks talking talked speaks speaking spoke opens opening "
    "opened closes closing closed cuts cutting slices slicing sliced peels peeling peeled mixes mixing mixed "
    "big small large little young old new tall short long red blue green black white yellow brown happy sad "
    "fast slow hot cold warm dry wet heavy light dark bright quiet loud busy empty full clean dirty wooden "
    "very quickly slowly carefully together outside inside near down up over under across through behind "
    "government minister president election parliament economy market shares prices investors inflation "
    "company companies percent billion million report reports announced officials police court judge law "
    "according statement spokesman agreement negotiations talks security military troops attack killed "
    "said says told asked added expected believed reported confirmed denied refused decided continued "
    "yesterday today tomorrow morning evening night week month year years week's monday tuesday friday "
    "international national european american african asian regional local federal economic political "
    "unbelievable extraordinary photographer professional championship tournament electricity "
    "environmental responsibility investigation infrastructure manufacturer pharmaceutical "
    "skateboarder snowboarder motorcyclist trampoline microphone binoculars saxophone accordion "
    "veterinarian wheelbarrow lawnmower firefighters construction scaffolding headquarters "
    "reconciliation referendum legislature unemployment subsidies tariffs cryptocurrency"
).split()


def variable_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 5-200 one-token words (the long-text throughput workload)."""
    rng = np.random.default_rng(seed)
    words = np.asarray(SINGLE_TOKEN_WORDS)
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 201)))) for _ in range(n)]


def fixed_texts(n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` texts of exactly ``tokens`` tokens on a BERT WordPiece tokenizer ([CLS] and [SEP] included)."""
    if tokens < 3:
        raise ValueError(f"a fixed-length text needs at least 3 tokens, got {tokens}")
    rng = np.random.default_rng(seed)
    words = np.asarray(SINGLE_TOKEN_WORDS)
    return [" ".join(rng.choice(words, size=tokens - 2)) for _ in range(n)]


def _text(words: list[str]) -> str:
    """A sentence as text: capitalized, with its full stop (punctuation is tokens too)."""
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


def _sentence(rng: np.random.Generator, words: np.ndarray) -> list[str]:
    # lognormal lengths: most sentences 6-14 words, a tail to 30, as in STS and SICK
    length = int(np.clip(round(rng.lognormal(mean=2.2, sigma=0.42)), 4, 30))
    return list(rng.choice(words, size=length))


def sts_pairs(n_pairs: int, seed: int, reuse: float = 0.35) -> list[dict[str, Any]]:
    """STS-shaped rows: ``sentence1``, ``sentence2`` and a 0-5 ``score``.

    About ``reuse`` of the first sentences repeat earlier ones (real sets pair one sentence with several
    others), second sentences are edits of the first (a similar pair) or another sentence (a dissimilar
    pair), and the gold score is 5 x the word overlap (Jaccard), so a good model correlates with it.
    """
    rng = np.random.default_rng(seed)
    words = np.asarray(ENGLISH)
    pool: list[list[str]] = []
    rows = []
    for _ in range(n_pairs):
        if pool and rng.random() < reuse:
            first = pool[int(rng.integers(len(pool)))]
        else:
            first = _sentence(rng, words)
            pool.append(first)
        if rng.random() < 0.6:  # an edit: keep most words, change some
            second = [w if rng.random() < 0.7 else str(rng.choice(words)) for w in first]
            if rng.random() < 0.5:
                second = second[: max(3, len(second) - int(rng.integers(0, 4)))]
        else:
            second = _sentence(rng, words)
        overlap = len(set(first) & set(second)) / max(1, len(set(first) | set(second)))
        rows.append({"sentence1": _text(first), "sentence2": _text(second), "score": round(5 * overlap, 3)})
    return rows


#: (name, pairs, seed): the sizes of STS12, STS13 and SICK-R's test sets.
STS_SHAPES = (("GeneratedSTS12", 3108, 12), ("GeneratedSTS13", 1500, 13), ("GeneratedSICKR", 9927, 27))


def sts_task(name: str, n_pairs: int, seed: int) -> Any:
    """An mteb ``AbsTaskSTS`` over :func:`sts_pairs` (its data is built in ``load_data``, nothing downloads)."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    from .demo import MtebVllmDemoSTS

    metadata = TaskMetadata(**{**MtebVllmDemoSTS.metadata.model_dump(), "name": name,
                               "description": f"{n_pairs} generated STS-shaped sentence pairs (seed {seed})."})

    class GeneratedSTS(AbsTaskSTS):
        min_score, max_score = 0, 5

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = DatasetDict({"test": Dataset.from_list(sts_pairs(n_pairs, seed))})
            self.data_loaded = True

    GeneratedSTS.metadata = metadata
    GeneratedSTS.__name__ = GeneratedSTS.__qualname__ = name
    return GeneratedSTS()


def sts_tasks() -> list[Any]:
    """The three STS-shaped tasks of the end-to-end benchmarks (about 29k pairs)."""
    return [sts_task(name, pairs, seed) for name, pairs, seed in STS_SHAPES]


def describe_sentences(sentences: list[str], tokenizer: Any = None) -> dict[str, float]:
    """Counts a workload's report states: sentences, unique ones, words per sentence, tokens per sentence."""
    lengths = [len(s.split()) for s in sentences]
    out = {"sentences": len(sentences), "unique": len(set(sentences)), "mean_words": float(np.mean(lengths)),
           "p50_words": float(np.median(lengths)), "max_words": float(max(lengths))}
    if tokenizer is not None:
        unique = list(dict.fromkeys(sentences))
        tokens = [len(ids) for ids in tokenizer(unique)["input_ids"]]
        out["mean_tokens"] = float(np.mean(tokens))
        out["tokens_per_word"] = float(np.mean(tokens) - 2) / float(np.mean([len(s.split()) for s in unique]))
    return out
