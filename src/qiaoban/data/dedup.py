"""Near-duplicate detection for Chinese (or any) text: MinHash over character n-grams with LSH banding.

    index = NearDuplicateIndex(threshold=0.85)
    for d in dialogues:
        if (twin := index.add(d.id, dialogue_text(d))) is not None:
            print(d.id, "duplicates", twin)

Word shingles do not work on Chinese (no spaces: every text is one "word"), so we hash overlapping character
n-grams of the text after folding width and case and dropping punctuation and whitespace. A candidate found
through the LSH bands is confirmed by its estimated Jaccard similarity before it counts as a duplicate.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

import numpy as np

from qiaoban.dialogue import Dialogue

_NOT_WORD = re.compile(r"[\W_]+")


def normalize_text(text: str) -> str:
    """NFKC (full-width → half-width), lower case, and only letters, digits and Han characters kept."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).lower())


def dialogue_text(dialogue: Dialogue) -> str:
    """What the near-duplicate index hashes: every turn's text in order (roles and ids left out)."""
    return "\n".join(turn.text for turn in dialogue.turns)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit mixer (uint64 arithmetic wraps, which is what we want)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _choose_bands(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """Bands b and rows r (b*r <= num_perm): the longest rows (fewest spurious candidates) such that a pair
    exactly at the threshold still shares a band with probability >= recall, 1 - (1 - t^r)^b. Candidates are
    then confirmed by their estimated Jaccard, so a loose band test costs only time, never precision."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


class NearDuplicateIndex:
    """MinHash-LSH index. `add` returns the key of an earlier near-duplicate (and does not store the text) or
    None (and stores it). Deterministic for a given seed: same texts, same answers, on any machine."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 3, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 2 or ngram < 1:
            raise ValueError("num_perm must be >= 2 and ngram >= 1")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        rng = np.random.default_rng(seed)
        # Multiply-shift hash family: h_i(x) = (a_i * x + b_i) mod 2^64, top 32 bits; a_i odd.
        self._a = rng.integers(1, 2**63, size=(num_perm, 1), dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64)
        self.bands, self.rows = _choose_bands(threshold, num_perm)
        self._tables: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(self.bands)]
        self._keys: list[str] = []
        self._signatures = np.empty((0, num_perm), dtype=np.uint32)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _shingles(self, text: str) -> np.ndarray:
        norm = normalize_text(text)
        codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        n = self.ngram
        if len(codes) < n:  # shorter than one n-gram: the whole text is the only shingle
            n = max(len(codes), 1)
            codes = codes if len(codes) else np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            h = np.zeros(len(codes) - n + 1, dtype=np.uint64)
            for k in range(n):
                h = _splitmix64(h ^ codes[k : len(codes) - n + 1 + k])
        return np.unique(h)

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature (num_perm uint32 values) of the text's character n-grams."""
        shingles = self._shingles(text)
        with np.errstate(over="ignore"):
            hashed = (self._a * shingles[None, :] + self._b) >> np.uint64(32)
        return hashed.min(axis=1).astype(np.uint32)

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        r = self.rows
        return [sig[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]

    def _best_match(self, sig: np.ndarray, bands: list[bytes]) -> tuple[int, float] | None:
        candidates: set[int] = set()
        for table, key in zip(self._tables, bands, strict=True):
            candidates.update(table.get(key, ()))
        if not candidates:
            return None
        ids = np.fromiter(sorted(candidates), dtype=np.int64)
        sims = (self._signatures[ids] == sig).mean(axis=1)
        best = int(np.argmax(sims))  # ties go to the earliest stored text
        if sims[best] < self.threshold:
            return None
        return int(ids[best]), float(sims[best])

    def query(self, text: str) -> str | None:
        """The key of the most similar stored text at or above the threshold, or None."""
        sig = self.signature(text)
        match = self._best_match(sig, self._band_keys(sig))
        return None if match is None else self._keys[match[0]]

    def similarity(self, a: str, b: str) -> float:
        """Estimated Jaccard similarity of two texts' character n-gram sets."""
        return float((self.signature(a) == self.signature(b)).mean())

    def add(self, key: str, text: str) -> str | None:
        """Store the text under key unless a near-duplicate is already stored; then return that one's key."""
        sig = self.signature(text)
        bands = self._band_keys(sig)
        match = self._best_match(sig, bands)
        if match is not None:
            return self._keys[match[0]]
        row = self._count
        if row == len(self._signatures):  # grow geometrically
            grown = np.empty((max(64, 2 * row), self.num_perm), dtype=np.uint32)
            grown[:row] = self._signatures[:row]
            self._signatures = grown
        self._signatures[row] = sig
        self._keys.append(key)
        for table, band in zip(self._tables, bands, strict=True):
            table[band].append(row)
        self._count += 1
        return None

