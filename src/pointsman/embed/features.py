"""Cheap prompt features: what the embedding cannot see (length beyond truncation, shape, task type).

Pure Python + numpy, microseconds per prompt. The order of :data:`FEATURE_NAMES` is part of the
trained-artifact contract: artefacts store the names they were trained with and read only that many
leading columns (:func:`feature_width`), so new features are appended at the end, never inserted, and
:data:`FEATURES_VERSION` is bumped whenever an existing feature changes.

The ``task_*`` features count cues of a task type (code, math, multi-step reasoning, structured
extraction, writing, role-play) by hand-written patterns. A static embedding mostly sees a prompt's
topic; what kind of task it is, which is what decides whether a stronger model helps, is in its verbs
and markers, and those mean the same on any traffic (predictors/transfer.py leans on them out of
distribution). The patterns only say what a type looks like, never how much a stronger model helps.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

FEATURES_VERSION = 2
# the first version's features are the first 21 columns, unchanged (artefacts of version 1 read those)
_COMPATIBLE_PREFIXES = {1: 21}

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
    "task_code",         # log1p(cues of a programming task: code fences, languages, code words)
    "task_math",         # log1p(cues of a calculation or proof)
    "task_reasoning",    # log1p(cues of a puzzle or multi-step deduction)
    "task_extraction",   # log1p(cues of extracting or reformatting given text into a structure)
    "task_writing",      # log1p(cues of a creative or editing writing task)
    "task_roleplay",     # log1p(cues of a persona or role-play)
    "task_advice",       # log1p(cues of an open-ended request: ideas, tips, recommendations, opinions)
)
TASK_TYPES = ("code", "math", "reasoning", "extraction", "writing", "roleplay", "advice")

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


# Task cues, read on the lower-cased text: single words by one dictionary look-up per word, phrases and
# symbols by one regular expression per type (a dozen case-insensitive patterns cost about 2 ms at 512 tokens).
_CUE_WORDS: dict[str, tuple[str, ...]] = {
    "code": ("python", "javascript", "typescript", "java", "c++", "c#", "golang", "rust", "ruby", "php", "kotlin", "swift",
             "scala", "haskell", "perl", "bash", "powershell", "sql", "html", "css", "verilog", "matlab", "react", "django",
             "flask", "nodejs", "pandas", "numpy", "docker", "kubernetes", "git", "function", "method", "class", "compile",
             "compiler", "debug", "bug", "stacktrace", "exception", "syntax", "algorithm", "recursion", "api", "endpoint",
             "regex", "script", "program", "code", "snippet", "implement", "refactor"),
    "math": ("solve", "calculate", "compute", "evaluate", "simplify", "integral", "integrate", "derivative", "differentiate",
             "equation", "inequality", "polynomial", "matrix", "determinant", "eigenvalue", "eigenvalues", "eigenvector",
             "eigenvectors", "probability", "variance", "prime", "factorise", "factorize", "theorem", "lemma", "geometry",
             "triangle", "circle", "radius"),
    "reasoning": ("riddle", "puzzle", "logic", "logical", "deduce", "infer", "reasoning", "paradox", "brainteaser"),
    "extraction": ("extract", "parse", "tabulate", "json", "csv", "yaml", "xml", "classify", "categorise", "categorize"),
    "writing": ("poem", "poems", "story", "stories", "essay", "essays", "novel", "fiction", "fictional", "lyrics", "haiku",
                "limerick", "sonnet", "screenplay", "slogan", "blog", "creative", "creatively"),
    "roleplay": ("pretend", "roleplay", "embody", "persona"),
    "advice": ("ideas", "brainstorm", "suggest", "suggestions", "tips", "advice", "recommend", "recommendations", "opinion",
               "pros", "cons"),
}
_CUE_PHRASES: dict[str, str] = {
    "code": r"```|\b(?:def|return|import|const|var|let|public|void|print|printf|console\.log)\b[^\n]{0,40}[(){};=]"
            r"|shell script|stack trace|regular expression|unit test|node\.js",
    "math": r"\d\s*[-+*/^×÷=<>]\s*\d|[=^√∑∫π]|\\frac|\\sqrt|\bx\s*=|\bf\(x\)|\b\d+(?:\.\d+)?\s*%"
            r"|expected value|prove that|area of|volume of|how many|how much",
    "reasoning": r"step[- ]by[- ]step|think carefully|brain teaser|which (?:one|of these) is|true or false|what day"
                 r"|\bif\b[^.?!]{0,60}\bthen\b",
    "extraction": r"identify all|list (?:all|every)|pull out|in (?:a )?table|as (?:a )?(?:json|table|csv|list|yaml)|label each"
                  r"|\b(?:from|in) the (?:following|text|passage|paragraph|article|document|email|data|table)\b",
    "writing": r"\b(?:write|compose|draft|craft)\b[^.?!]{0,40}\b(?:poem|story|essay|song|lyrics|letter|email|blog|article"
               r"|speech|toast|screenplay|novel|haiku|limerick|sonnet|tweet|post|review|description|slogan|proposal)\b"
               r"|\b(?:rewrite|rephrase|paraphrase|proofread|polish) (?:this|the|my|following)\b"
               r"|\b(?:tv|movie|film|video|podcast) script",
    "roleplay": r"role[- ]play|\bact(?:ing)? as\b|imagine you(?:rself)?(?: are)?\b|in the (?:voice|style|persona) of"
                r"|take on the (?:role|persona)|stay in character|let'?s play|\byou are (?:an? [a-z]+|now\b)",
    "advice": r"what do you think|should i\b|how (?:can|do|should) i\b|any (?:ideas|tips|advice)",
}
# the characters each type's phrases can start with: a look-ahead on them lets the engine skip every other position
_CUE_FIRST = {"code": "`drivclpsun", "math": "0-9=^√∑∫π\\\\xfepavh", "reasoning": "stbwi", "extraction": "ilpaf",
              "writing": "wcdrptmfv", "roleplay": "raitsly", "advice": "wsha"}
_CUE_TYPE_OF_WORD = {word: k for k, name in enumerate(TASK_TYPES) for word in _CUE_WORDS[name]}
_CUE_PATTERNS = tuple(re.compile(f"(?=[{_CUE_FIRST[name]}])(?:{_CUE_PHRASES[name]})") for name in TASK_TYPES)
_CUE_WORD = re.compile(r"[a-z][a-z0-9+#]*")
_CUE_CHARS = 2000  # cues are read in the first and last characters: the ask is near the start or the end


def task_cues(text: str) -> list[float]:
    """log1p(count of each task type's cues), in :data:`TASK_TYPES` order."""
    head = (text if len(text) <= 2 * _CUE_CHARS else text[:_CUE_CHARS] + "\n" + text[-_CUE_CHARS:]).lower()
    counts = [len(pattern.findall(head)) for pattern in _CUE_PATTERNS]
    type_of = _CUE_TYPE_OF_WORD.get
    for word in _CUE_WORD.findall(head):
        k = type_of(word)
        if k is not None:
            counts[k] += 1
    return [math.log1p(c) for c in counts]


def feature_width(names: Sequence[str], version: int) -> int:
    """How many leading columns of today's features an artefact trained with ``names`` reads; ValueError
    when its features are not a prefix of today's (then it must be retrained)."""
    names = tuple(names)
    if names == FEATURE_NAMES[:len(names)] and (version == FEATURES_VERSION or _COMPATIBLE_PREFIXES.get(version) == len(names)):
        return len(names)
    raise ValueError("artefact was trained with a different prompt-feature set; retrain it")


def feature_meta(width: int) -> tuple[list[str], int]:
    """(names, version) to record for an artefact that reads the first ``width`` features."""
    if width == len(FEATURE_NAMES):
        return list(FEATURE_NAMES), FEATURES_VERSION
    version = next((v for v, w in _COMPATIBLE_PREFIXES.items() if w == width), FEATURES_VERSION)
    return list(FEATURE_NAMES[:width]), version


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
            *task_cues(t),
        )
    return out
