"""Cheap prompt features: what the 256-token embedding cannot see (length beyond truncation, shape).

Pure Python + numpy, microseconds per prompt. The order of :data:`FEATURE_NAMES` is part of the
trained-artifact contract: predictors store it and refuse a mismatch, so bump
:data:`FEATURES_VERSION` whenever a feature changes.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

FEATURES_VERSION = 1

FEATURE_NAMES: tuple[str, ...] = (
    "log_tokens",        # log1p(tokens before truncation)
    "log_chars",         # log1p(characters)
    "log_words",         # log1p(whitespace words)
    "log_lines",         # log1p(lines)
    "truncated",         # 1 if the text is longer than the encoder's window
    "frac_digits",       # digits / chars
    "log_numbers",       # log1p(count of numbers)
    "frac_upper",        # uppercase / letters
    "frac_punct",        # punctuation / chars
    "math_symbols",      # log1p(count of + - * / = ^ < > % $ and LaTeX-ish commands)
    "code_markers",      # log1p(count of code cues: ``` def class return ; { } ( ) import)
    "questions",         # log1p(count of '?')
    "option_lines",      # log1p(lines that look like multiple-choice options "A." "B)" ...)
    "mean_word_len",     # mean characters per word / 10
    "log_sentences",     # log1p(sentence ends . ! ? followed by space/end)
    "log_distinct_nums", # log1p(distinct numbers)
    "decimals_fracs",    # log1p(count of decimals, fractions a/b and percentages)
    "log_max_number",    # log1p(log1p(largest number))
    "quantity_words",    # log1p(count of each/per/times/twice/half/total/remaining/percent/...)
    "log_last_sentence", # log1p(words in the last sentence: the actual ask)
    "negations",         # log1p(count of not/except/least/false/incorrect/never: inverted questions)
)

_NUM = re.compile(r"\d+(?:[.,]\d+)?")
_MATH = re.compile(r"[+\-*/=^<>%$]|\\(?:frac|sqrt|sum|int|cdot|times|le|ge)")
_CODE = re.compile(r"```|\bdef\b|\bclass\b|\breturn\b|\bimport\b|[;{}]|\w\(")
_OPTION = re.compile(r"^\s*(?:[A-Ha-h]|[1-9])[.)]\s", re.MULTILINE)
_PUNCT = re.compile(r"[^\w\s]")
_SENT = re.compile(r"[.!?](?:\s|$)")
_DECFRAC = re.compile(r"\d+\.\d+|\d+\s*/\s*\d+|\d+\s*%|percent")
_NEG = re.compile(r"\b(?:not|except|least|false|incorrect|never|cannot)\b", re.IGNORECASE)
_QUANT = re.compile(r"\b(?:each|per|times|twice|thrice|half|third|quarter|total|remaining|rest|left|more|less|"
                    r"fewer|every|average|ratio|profit|cost|costs|price|discount|rate)\b", re.IGNORECASE)


def _num_value(s: str) -> float:
    try:
        return min(abs(float(s.replace(",", ""))), 1e30)
    except ValueError:
        return 0.0


def _last_sentence(t: str) -> str:
    parts = [p for p in _SENT.split(t.strip()) if p.strip()]
    return parts[-1] if parts else t


def prompt_features(texts: Sequence[str], n_tokens: Sequence[int] | np.ndarray, max_seq_length: int = 256
                    ) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 features.

    ``n_tokens`` is each text's token count *before* truncation, including [CLS]/[SEP]
    (as returned by :meth:`MiniLMEncoder.encode_with_features`).
    """
    out = np.zeros((len(texts), len(FEATURE_NAMES)), dtype=np.float32)
    for i, (t, nt) in enumerate(zip(texts, n_tokens)):
        nc = len(t)
        words = t.split()
        nw = len(words)
        letters = sum(map(str.isalpha, t))  # map: same counts, about twice as fast as a generator
        upper = sum(map(str.isupper, t))
        digits = sum(map(str.isdigit, t))
        nums = _NUM.findall(t)
        nvals = [_num_value(x) for x in nums[:200]]
        out[i] = (
            math.log1p(nt),
            math.log1p(nc),
            math.log1p(nw),
            math.log1p(t.count("\n") + 1 if t else 0),
            1.0 if nt > max_seq_length else 0.0,
            digits / nc if nc else 0.0,
            math.log1p(len(nums)),
            upper / letters if letters else 0.0,
            len(_PUNCT.findall(t)) / nc if nc else 0.0,
            math.log1p(len(_MATH.findall(t))),
            math.log1p(len(_CODE.findall(t))),
            math.log1p(t.count("?")),
            math.log1p(len(_OPTION.findall(t))),
            (sum(len(w) for w in words) / nw / 10.0) if nw else 0.0,
            math.log1p(len(_SENT.findall(t))),
            math.log1p(len(set(nums))),
            math.log1p(len(_DECFRAC.findall(t))),
            math.log1p(math.log1p(max(nvals))) if nvals else 0.0,
            math.log1p(len(_QUANT.findall(t))),
            math.log1p(len(_last_sentence(t).split())),
            math.log1p(len(_NEG.findall(t))),
        )
    return out
