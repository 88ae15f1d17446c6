"""Cheap features of one (prompt, answer) pair for the learned verifier: pure Python, ~0.1 ms an answer.

What an embedding of the answer's tail cannot see: how long the answer is (absolute and against the
prompt), whether it ends in a final number and whether that number is a whole one (most word problems
have whole answers), whether the prompt's quantities are used, whether the written equations recompute
(:func:`pointsman.cascade.validators.arithmetic_errors`), hedging, refusals, repetition, lists and code.

The order of :data:`ANSWER_FEATURE_NAMES` is part of the verifier artefact's contract (it stores the
names and refuses a mismatch), so bump :data:`ANSWER_FEATURES_VERSION` whenever a feature changes.

:func:`answer_tail` is the bounded part of the answer that gets embedded: its last ``chars``
characters (about ``chars / 4`` tokens), where the final result sits. Training and the gateway both
cut with it, so they embed the same text.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from pointsman.cascade.validators import arithmetic_errors, is_refusal

__all__ = ["ANSWER_FEATURE_NAMES", "ANSWER_FEATURES_VERSION", "answer_features", "answer_tail", "final_number"]

ANSWER_FEATURES_VERSION = 1

ANSWER_FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",            # log1p(answer characters)
    "log_lines",            # log1p(lines)
    "len_ratio",            # log((answer chars + 50) / (prompt chars + 50))
    "has_final_number",     # a number in the answer's last line / "#### x" / "answer is x"
    "final_is_integer",     # that number is whole
    "final_marker",         # the answer states its result explicitly ("####", "the answer is", "therefore", boxed)
    "final_in_prompt",      # the final number is one of the prompt's own numbers (often a non-answer)
    "final_negative",       # the final number is negative
    "log_final_mag",        # log1p(log1p(|final number|))
    "prompt_num_coverage",  # share of the prompt's distinct numbers that appear in the answer
    "log_answer_numbers",   # log1p(numbers in the answer)
    "eq_checked",           # log1p(equations recomputed)
    "eq_wrong",             # log1p(equations that do not recompute)
    "eq_any_wrong",         # at least one wrong equation
    "hedging",              # log1p(count of "approximately", "assume", "not sure", "however", "round", ...)
    "refusal",              # the answer opens by declining
    "repetition",           # share of repeated lines (loops)
    "log_list_items",       # log1p(bullet / numbered lines)
    "code_blocks",          # log1p(``` fences)
    "ends_cleanly",         # the answer ends with sentence punctuation, a number or a fence
    "apology",              # "I apologize" / "my mistake" / "correction" (self-corrections)
    "multiple_finals",      # log1p(distinct numbers after "answer is"/"####"/"=" in the last 3 lines)
    "decimal_final",        # the final number has a fractional part written out (e.g. 2.5)
    "question_back",        # the answer asks the user something ("?" in the last line)
)

_NUM = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_MARKER = re.compile(r"####|answer is|answer:|therefore|thus|in total|so,? the|\\boxed", re.IGNORECASE)
_HEDGE = re.compile(r"\b(?:approximately|approx|about|around|roughly|assum\w*|not sure|unclear|however|"
                    r"round(?:ed|ing)?|cannot be determined|not possible|impossible|estimate\w*|might|may|"
                    r"perhaps|likely|probably)\b", re.IGNORECASE)
_APOLOGY = re.compile(r"\b(?:i apologi[sz]e|my mistake|correction|i made an error|let me re|recalculat\w*|"
                      r"wait|actually|mistake)\b", re.IGNORECASE)
_LIST = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s", re.MULTILINE)
_FINAL_LINE = re.compile(r"(?:####|answer is|answer:|=)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def _value(s: str) -> float | None:
    s = s.replace(",", "").replace("$", "")
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def answer_tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of ``text``, starting at a word boundary when one is near."""
    text = text.strip()
    if chars <= 0 or len(text) <= chars:
        return text
    tail = text[-chars:]
    cut = tail.find(" ", 0, 24)
    return tail[cut + 1:] if cut >= 0 else tail


def final_number(text: str) -> float | None:
    """The answer's final result: after "####", else after "answer is", else the last number."""
    t = text.strip()
    for pattern in (r"####\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", r"\\boxed\{\s*\$?(-?\d[\d,]*(?:\.\d+)?)",
                    r"answer is:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)"):
        found = re.findall(pattern, t, re.IGNORECASE)
        if found:
            return _value(found[-1])
    found = _NUM.findall(t[-400:])
    return _value(found[-1]) if found else None


def _one(prompt: str, answer: str) -> list[float]:
    a = answer.strip()
    lines = [ln.strip() for ln in a.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    final = final_number(a)
    prompt_nums = {v for v in (_value(x) for x in _NUM.findall(prompt)) if v is not None}
    answer_nums = [v for v in (_value(x) for x in _NUM.findall(a)) if v is not None]
    answer_set = set(answer_nums)
    checked, wrong = arithmetic_errors(a)
    tail_lines = "\n".join(lines[-3:])
    finals = {v for v in (_value(x) for x in _FINAL_LINE.findall(tail_lines)) if v is not None}
    repeated = (1.0 - len(set(lines)) / len(lines)) if len(lines) > 1 else 0.0
    ends = a[-1:] if a else ""
    return [
        math.log1p(len(a)),
        math.log1p(len(lines)),
        math.log((len(a) + 50) / (len(prompt) + 50)),
        float(final is not None),
        float(final is not None and abs(final - round(final)) < 1e-9),
        float(bool(_MARKER.search(a[-300:]))),
        float(final is not None and final in prompt_nums),
        float(final is not None and final < 0),
        math.log1p(math.log1p(abs(final))) if final is not None else 0.0,
        (len(prompt_nums & answer_set) / len(prompt_nums)) if prompt_nums else 1.0,
        math.log1p(len(answer_nums)),
        math.log1p(checked),
        math.log1p(wrong),
        float(wrong > 0),
        math.log1p(len(_HEDGE.findall(a))),
        float(is_refusal(a)),
        repeated,
        math.log1p(len(_LIST.findall(a))),
        math.log1p(a.count("```")),
        float(ends in ".!)]`\"'*" or ends.isdigit()),
        float(bool(_APOLOGY.search(a))),
        math.log1p(len(finals)),
        float(final is not None and abs(final - round(final)) >= 1e-9),
        float("?" in last),
    ]


def answer_features(prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """(n, len(ANSWER_FEATURE_NAMES)) float32 features of each (prompt, answer) pair."""
    out = np.zeros((len(answers), len(ANSWER_FEATURE_NAMES)), dtype=np.float32)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        out[i] = _one(p or "", a or "")
    return out
