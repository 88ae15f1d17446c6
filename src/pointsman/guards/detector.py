"""The injection detector: a rule layer, then a logistic head on two views of a text.

* the prompt's **static embedding** (embed/static.py), which tier-2 routing computes anyway: shared through
  ``RouteContext.embedding``, so with a semantic policy it costs nothing here;
* its **hashed n-grams** (words, word pairs, character 4-grams; crc32 into ``buckets``, L2-normalised): attack
  phrasings are lexical, and a bag of n-grams sees "reveal ... initialization" where a mean embedding sees a
  sentence about software. A few hundred n-grams per prompt, tens of microseconds.

score = sigmoid(w_h . h + w_e . e + b), or 1.0 when a rule matches. The artefact is plain arrays plus JSON
(no pickle): the weights, and the sorted scores of the calibration split's benign texts, from which any
false-positive rate's threshold is read (``threshold_at``). ``fit`` trains it (scipy, the train extra).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pointsman.guards.rules import match_rule

__all__ = ["InjectionHead", "hashed_ngrams", "DEFAULT_HEAD", "BUCKETS", "Score", "quantile_above"]

BUCKETS = 1 << 18
DEFAULT_HEAD = Path(__file__).with_name("models") / "injection.npz"
RECIPE = "w1+w2+c4/crc32"  # what ``hashed_ngrams`` computes: bumped when it changes, checked at load
_WORD = re.compile(r"\w+")


def hashed_ngrams(text: str, buckets: int = BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, L2-normalised counts) of the text's words, word pairs and character 4-grams (lower-cased,
    over the words joined by single spaces, so spacing and punctuation tricks change nothing)."""
    words = _WORD.findall(text.lower())
    counts: dict[int, int] = {}
    crc = zlib.crc32
    for gram in words:
        h = crc(b"w" + gram.encode()) % buckets
        counts[h] = counts.get(h, 0) + 1
    for a, b in zip(words, words[1:]):
        h = crc(f"b{a} {b}".encode()) % buckets
        counts[h] = counts.get(h, 0) + 1
    joined = (" " + " ".join(words) + " ").encode()
    for i in range(len(joined) - 3):
        h = crc(b"c" + joined[i:i + 4]) % buckets
        counts[h] = counts.get(h, 0) + 1
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    return index, values / np.float32(np.sqrt(float(values @ values)))


def quantile_above(sorted_scores: np.ndarray, share: float) -> float:
    """The score that ``share`` of ``sorted_scores`` (ascending) are strictly above, at most: an operating point
    read on a calibration split."""
    k = min(len(sorted_scores) - 1, max(0, int(np.ceil((1.0 - share) * len(sorted_scores))) - 1))
    return float(sorted_scores[k])


@dataclass(frozen=True, slots=True)
class Score:
    score: float  # 0..1
    rule: str | None = None  # the rule that matched, when one did
    logit: float = 0.0  # the trained head's log-odds (the second stage adds its own reading to it)
    stage: int = 1  # the detector stage whose score this is (guards/injection.py: first, or the second stage)
    gated: bool = False  # below the second stage's gate: benign without the second look, whatever the score

    def flagged(self, bar: float) -> bool:
        return self.rule is not None or (not self.gated and self.score >= bar)


class InjectionHead:
    """``hash_w_`` (buckets,), ``emb_w_`` (dim,), ``bias_``; ``calibration_`` the sorted benign scores of the
    held-out split that thresholds are read from; ``info`` what it was trained on and with."""

    def __init__(self, hash_w: np.ndarray, emb_w: np.ndarray, bias: float, calibration: np.ndarray,
                 info: dict[str, Any]) -> None:
        self.hash_w_ = hash_w.astype(np.float32)
        self.emb_w_ = emb_w.astype(np.float32)
        self.bias_ = float(bias)
        self.calibration_ = np.sort(calibration.astype(np.float64))
        self.info = info
        self.buckets = int(info.get("buckets", BUCKETS))

    @property
    def encoder(self) -> str:
        """The static encoder's model id the head was trained on (its embedding half)."""
        return str(self.info["encoder"])

    @property
    def fingerprint(self) -> str:
        """A digest of the weights: what a second stage's gate was calibrated with (second_stage.py)."""
        digest = hashlib.sha256(self.hash_w_.tobytes())
        digest.update(self.emb_w_.tobytes())
        digest.update(np.float64(self.bias_).tobytes())
        return digest.hexdigest()[:16]

    # -- scoring ------------------------------------------------------------------------------------------------
    def logit(self, text: str, embedding: np.ndarray) -> float:
        index, values = hashed_ngrams(text, self.buckets)
        return float(values @ self.hash_w_[index]) + float(embedding @ self.emb_w_) + self.bias_

    def score(self, text: str, embedding: np.ndarray) -> Score:
        rule = match_rule(text)
        if rule is not None:
            return Score(1.0, rule)
        logit = self.logit(text, embedding)
        return Score(float(1.0 / (1.0 + np.exp(-logit))), logit=logit)

    def threshold_at(self, fpr: float) -> float:
        """The score above which ``fpr`` of the calibration split's benign texts fall (rules not counted)."""
        return quantile_above(self.calibration_, fpr)

    # -- training -----------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, texts: Sequence[str], labels: np.ndarray, embeddings: np.ndarray, calibration_texts: Sequence[str],
            calibration_labels: np.ndarray, calibration_embeddings: np.ndarray, info: dict[str, Any],
            l2: float = 1e-5, buckets: int = BUCKETS, max_iter: int = 500) -> "InjectionHead":
        """Logistic regression (L-BFGS, an L2 penalty) on [hashed n-grams, embedding]; the calibration split's
        benign scores are kept for ``threshold_at``."""
        from scipy.optimize import minimize
        from scipy.sparse import csr_matrix, hstack

        def design(items: Sequence[str], emb: np.ndarray) -> Any:
            rows, cols, vals = [], [], []
            for i, text in enumerate(items):
                index, values = hashed_ngrams(text, buckets)
                rows.extend([i] * len(index))
                cols.extend(index.tolist())
                vals.extend(values.tolist())
            hashed = csr_matrix((vals, (rows, cols)), shape=(len(items), buckets), dtype=np.float64)
            return hstack([hashed, csr_matrix(emb.astype(np.float64))]).tocsr()

        x = design(texts, embeddings)
        y = np.asarray(labels, dtype=np.float64)
        n, d = x.shape

        def loss(p: np.ndarray) -> tuple[float, np.ndarray]:
            z = x @ p[:-1] + p[-1]
            prob = 1.0 / (1.0 + np.exp(-z))
            value = float(np.mean(np.logaddexp(0.0, z) - y * z)) + l2 * float(p[:-1] @ p[:-1])
            grad = x.T @ (prob - y) / n
            return value, np.append(grad + 2 * l2 * p[:-1], np.mean(prob - y))

        found = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        w = found.x
        head = cls(w[:buckets], w[buckets:-1], w[-1], np.zeros(1),
                   {**info, "buckets": buckets, "recipe": RECIPE, "l2": l2, "n_train": n})
        calibration = np.array([head.score(t, e).score for t, e, label in
                                zip(calibration_texts, calibration_embeddings, calibration_labels) if label == 0
                                and match_rule(t) is None])
        head.calibration_ = np.sort(calibration)
        return head

    # -- storage --------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        nonzero = np.flatnonzero(self.hash_w_)  # most buckets never see a training n-gram: stored sparse
        np.savez_compressed(path, hash_index=nonzero.astype(np.int32), hash_values=self.hash_w_[nonzero],
                            emb_w=self.emb_w_, bias=np.array([self.bias_]), calibration=self.calibration_,
                            info=np.array(json.dumps(self.info, sort_keys=True)))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_HEAD) -> "InjectionHead":
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            if info.get("recipe") != RECIPE:
                raise ValueError(f"{path}: injection head made with n-gram recipe {info.get('recipe')!r}, this "
                                 f"pointsman computes {RECIPE!r}: retrain it (bench/guards/train.py)")
            hash_w = np.zeros(int(info["buckets"]), dtype=np.float32)
            hash_w[data["hash_index"]] = data["hash_values"]
            return cls(hash_w, data["emb_w"], float(data["bias"][0]), data["calibration"], info)
