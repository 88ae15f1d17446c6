"""The false-hit guard: cheap text checks on a candidate, and a learned acceptance model.

Embedding similarity cannot tell "turn on dark mode" from "turn off dark mode". Before a semantic hit is
served, the query text and the cached prompt text are compared by five rule checks:

* ``negation`` — a negation cue (not, no, never, n't, without, unable, ...) on one side only;
* ``numbers``  — different numbers (digits or number words) or different units;
* ``entities`` — a proper noun, acronym, month or code identifier on one side that the other lacks;
* ``polarity`` — an antonym pair split across the two (on/off, increase/decrease, legal/illegal, ...);
* ``question`` — different specific question types (why / when / where / who / how many / how long).

A check that fires rejects the candidate outright. Candidates that pass all of them are scored by the
:class:`AcceptanceModel`: a logistic model of P(same meaning | similarity, text features), calibrated so
that, on labelled calibration data, the wrong-reuse rate among served requests stays under δ with a
one-sided (Clopper-Pearson) confidence bound. Feedback on served hits updates it online.

Everything here is pure Python + numpy and takes tens of microseconds per candidate; the facts of a
cached prompt are computed once and kept on the entry's side (see :class:`TextFacts`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["TextFacts", "facts", "CheckResult", "compare", "CHECK_NAMES", "FEATURE_NAMES", "AcceptanceModel",
           "clopper_pearson_upper", "pair_features"]

CHECK_NAMES = ("negation", "numbers", "entities", "polarity", "question")

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-+#']*[A-Za-z0-9+#]|[A-Za-z0-9]|[$€£%]")
_SENT_START = re.compile(r"(?:^|[.!?]\s+|\n)\s*[\"'(\[]*([A-Za-z][\w'.\-]*)")

_NEGATIONS = frozenset("""not no never none nobody nothing neither nor nowhere cannot without unable
    dont doesnt didnt isnt arent wasnt werent cant couldnt wont wouldnt shouldnt havent hasnt hadnt
    mustnt neednt aint""".split())

_NUMBER_WORDS: dict[str, float] = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                      "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1e6, "billion": 1e9,
                      "dozen": 12, "half": 0.5, "twice": 2, "double": 2, "triple": 3, "first": 1, "second": 2,
                      "third": 3})
# not counted: ordinals and multipliers (too often not quantities), and "one" (mostly a pronoun)
_NUMBER_WORD_ONLY_CARDINAL = {"first", "second", "third", "half", "twice", "double", "triple", "dozen", "one"}

_UNITS: dict[str, str] = {}
for _canon, _spellings in {
    "km": "km kms kilometer kilometers kilometre kilometres", "mi": "mi mile miles", "m": "m meter meters metre metres",
    "cm": "cm centimeter centimeters", "mm": "mm millimeter millimeters", "ft": "ft foot feet", "in": "inch inches",
    "kg": "kg kgs kilogram kilograms kilo kilos", "g": "g gram grams", "lb": "lb lbs pound pounds",
    "mg": "mg milligram milligrams", "l": "l liter liters litre litres", "ml": "ml milliliter milliliters",
    "usd": "$ usd dollar dollars bucks", "eur": "€ eur euro euros", "gbp": "£ gbp", "inr": "inr rupee rupees rs",
    "pct": "% percent percentage", "gb": "gb gigabyte gigabytes", "mb": "mb megabyte megabytes",
    "tb": "tb terabyte terabytes", "kb": "kb kilobyte kilobytes", "ghz": "ghz", "mhz": "mhz",
    "s": "s sec secs second seconds", "min": "min mins minute minutes", "h": "h hr hrs hour hours",
    "day": "day days", "week": "week weeks", "month": "month months", "year": "year years yr yrs",
    "c": "c °c celsius", "f": "°f fahrenheit", "k": "k", "w": "w watt watts", "v": "v volt volts",
    "mph": "mph", "kmh": "kmh kph",
}.items():
    for _f in _spellings.split():
        _UNITS[_f] = _canon

_MONTHS = frozenset("""january february march april june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday""".split())

# Capitalised words that are not names (sentence starters, pronouns, question words...).
_NOT_NAMES = frozenset("""i i'm i've i'd i'll what why how when where who whom whose which is are was were do does did
    can could should would will shall may might must have has had the a an if in on at for to of and or but so
    my your his her its our their this that these those there here it he she we they you me us them
    mr mrs ms dr st vs etc ok okay hi hello please thanks yes no not any some all best top good new
    quora tell explain give list""".split())

_ANTONYMS = [
    ("on", "off"), ("enable", "disable"), ("enabled", "disabled"), ("activate", "deactivate"),
    ("increase", "decrease"), ("raise", "lower"), ("up", "down"), ("more", "less"), ("more", "fewer"),
    ("max", "min"), ("maximum", "minimum"), ("maximize", "minimize"), ("best", "worst"), ("better", "worse"),
    ("buy", "sell"), ("buying", "selling"), ("before", "after"), ("add", "remove"), ("add", "delete"),
    ("start", "stop"), ("open", "close"), ("win", "lose"), ("gain", "lose"), ("hot", "cold"),
    ("positive", "negative"), ("true", "false"), ("high", "low"), ("higher", "lower"), ("import", "export"),
    ("upload", "download"), ("encrypt", "decrypt"), ("lock", "unlock"), ("cheap", "expensive"),
    ("advantage", "disadvantage"), ("pros", "cons"), ("push", "pull"), ("above", "below"), ("inside", "outside"),
    ("install", "uninstall"), ("connect", "disconnect"), ("love", "hate"), ("rich", "poor"), ("fast", "slow"),
    ("young", "old"), ("male", "female"), ("men", "women"), ("man", "woman"), ("boy", "girl"), ("first", "last"),
    ("left", "right"), ("north", "south"), ("east", "west"), ("legal", "illegal"), ("safe", "dangerous"),
    ("safe", "unsafe"), ("healthy", "unhealthy"), ("easy", "hard"), ("easy", "difficult"), ("long", "short"),
    ("strong", "weak"), ("success", "failure"), ("succeed", "fail"), ("accept", "reject"), ("allow", "deny"),
    ("allow", "block"), ("include", "exclude"), ("input", "output"), ("import", "export"), ("in", "out"),
    ("inbound", "outbound"), ("incoming", "outgoing"), ("send", "receive"), ("borrow", "lend"), ("early", "late"),
    ("love", "dislike"), ("like", "dislike"), ("agree", "disagree"), ("benefit", "drawback"), ("profit", "loss"),
    ("rise", "fall"), ("asleep", "awake"), ("wet", "dry"), ("light", "dark"), ("light", "heavy"),
    ("big", "small"), ("large", "small"), ("increase", "reduce"), ("forward", "backward"), ("mount", "unmount"),
    ("subscribe", "unsubscribe"), ("follow", "unfollow"), ("block", "unblock"), ("compress", "decompress"),
    ("encode", "decode"), ("serialize", "deserialize"), ("zip", "unzip"), ("pack", "unpack"), ("save", "discard"),
    ("join", "leave"), ("enter", "exit"), ("login", "logout"), ("sign in", "sign out"), ("plus", "minus"),
    ("debit", "credit"), ("arrive", "depart"), ("arrival", "departure"), ("import", "export"), ("past", "future"),
    ("ancient", "modern"), ("top", "bottom"), ("front", "back"), ("lowest", "highest"), ("cheapest", "costliest"),
    ("hottest", "coldest"), ("largest", "smallest"), ("biggest", "smallest"), ("fastest", "slowest"),
    ("oldest", "youngest"), ("oldest", "newest"), ("old", "new"), ("always", "sometimes"), ("with", "without"),
    ("pro", "anti"), ("for", "against"), ("similarities", "differences"), ("similar", "different"),
    ("same", "different"), ("friend", "enemy"), ("win", "loss"), ("wins", "losses"), ("cause", "cure"),
    ("cause", "prevent"), ("causes", "prevention"),
]
_NEG_PREFIXES = ("un", "dis", "in", "im", "il", "ir", "non", "de", "anti")

_QTYPES = [  # (type, regex) in order; a text may carry several
    ("why", re.compile(r"\bwhy\b|\bwhat (?:is|are|was|were) the (?:reason|cause)s?\b|\bwhat (?:causes|caused)\b|"
                       r"\bhow come\b|\breasons? (?:why|for)\b", re.I)),
    ("when", re.compile(r"\bwhen\b|\bwhat (?:year|time|date|day|month|age)\b|\bwhich (?:year|date|day|month)\b", re.I)),
    ("where", re.compile(r"\bwhere\b|\bwhat (?:place|country|city|location)\b|\bwhich (?:place|country|city)\b", re.I)),
    ("who", re.compile(r"\bwho\b|\bwhom\b|\bwhose\b|\bwhich (?:person|people)\b", re.I)),
    ("howmany", re.compile(r"\bhow (?:many|much)\b|\bwhat (?:is|are) the (?:number|amount|price|cost)\b", re.I)),
    ("howlong", re.compile(r"\bhow (?:long|often|far|old|big|tall|fast|soon)\b", re.I)),
]
_QTYPE_NAMES = [t for t, _ in _QTYPES]


def _forms(word: str) -> set[str]:
    """A word and its common inflections (increase → increases, increased, increasing)."""
    out = {word, word + "s", word + "es", word + "ed", word + "ing", word + "d", word + "er", word + "ers"}
    if word.endswith("e"):
        out |= {word[:-1] + "ing", word[:-1] + "ed"}
    if len(word) >= 3 and word[-1] not in "aeiouwxy" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        out |= {word + word[-1] + "ing", word + word[-1] + "ed", word + word[-1] + "er"}
    return out


_ANTONYM_FORMS: list[tuple[frozenset[str], frozenset[str]]] = []
for _x, _y in _ANTONYMS:
    if " " in _x:
        _ANTONYM_FORMS.append((frozenset({_x.replace(" ", "_")}), frozenset({_y.replace(" ", "_")})))
    elif len(_x) <= 3 or len(_y) <= 3 or _x in ("more", "less", "fewer", "best", "worst", "with", "without"):
        _ANTONYM_FORMS.append((frozenset({_x}), frozenset({_y})))  # short words: no inflections
    else:
        _ANTONYM_FORMS.append((frozenset(_forms(_x)), frozenset(_forms(_y))))


# word -> [(antonym pair index, side 0/1)]
_ANTONYM_INDEX: dict[str, list[tuple[int, int]]] = {}
for _i, (_xs, _ys) in enumerate(_ANTONYM_FORMS):
    for _side, _words in ((0, _xs), (1, _ys)):
        for _w in _words:
            _ANTONYM_INDEX.setdefault(_w, []).append((_i, _side))


@dataclass(slots=True)
class TextFacts:
    """What the checks need from one text; computed once per text (a cached prompt keeps its own)."""

    tokens: frozenset[str]  # lowercase words (apostrophes removed), with bigrams "sign_in" for phrasal pairs
    polar: dict[int, tuple[int, int]]  # antonym pair index -> (count of its first word, of its second)
    negations: int
    numbers: frozenset[tuple[float, str]]  # (value, unit or "")
    entities: frozenset[str]  # lowercase
    qtypes: frozenset[str]
    content: frozenset[str]  # tokens minus stopwords, for overlap features
    n_words: int


_STOP = _NOT_NAMES | frozenset("be been being as by from with about into than then also just only very really "
                               "get got make much many more most other such own same s t".split())
_NUM_TOKEN = re.compile(r"[$€£]?(\d[\d,]*(?:\.\d+)?)([a-z%°]*)")
_ORDINAL = frozenset({"st", "nd", "rd", "th", "sts", "nds", "rds", "ths", "s"})
_CAMEL = re.compile(r"[a-z][A-Z]")
_ALNUM_MIX = re.compile(r"(?=.*[A-Za-z])(?=.*\d)")
_PLAIN_NUMBER = re.compile(r"\d+(?:st|nd|rd|th|s|k|m)?|[\d.]+")
_SENTENCES = re.compile(r"[^.?!\n]+")
_APOS = str.maketrans("", "", "'\u2019")


def _stem_entity(tok: str) -> str:
    tok = tok.lower().translate(_APOS)
    if tok.endswith("s") and len(tok) > 4 and not tok.endswith("ss"):
        tok = tok[:-1]
    return tok


def _is_identifier(tok: str) -> bool:
    """snake_case, dotted.names, camelCase/iPhone, letters mixed with digits (GPT4, python3)."""
    if "_" in tok.strip("_") or "." in tok.strip("."):
        return not _PLAIN_NUMBER.fullmatch(tok)
    if _CAMEL.search(tok):
        return True
    return bool(_ALNUM_MIX.match(tok)) and not _PLAIN_NUMBER.fullmatch(tok.lower())


def facts(text: str) -> TextFacts:
    text = text.replace("\u2019", "'")
    raw = _TOKEN.findall(text)
    low = [t.lower().translate(_APOS) for t in raw]
    tokens = set(low)
    bigrams = [a + "_" + b for a, b in zip(low, low[1:])]
    tokens.update(bigrams)  # phrasal pairs like "sign in" / "sign out"
    negs = sum(1 for t in low if t in _NEGATIONS)
    # numbers with units
    nums: set[tuple[float, str]] = set()
    for i, t in enumerate(low):
        c0 = t[0]
        if c0.isdigit() or c0 in "$€£":
            m = _NUM_TOKEN.fullmatch(t)
            if m is None:
                continue
            try:
                value = float(m.group(1).replace(",", ""))
            except ValueError:
                continue
            unit = c0 if c0 in "$€£" else m.group(2)
        elif t in _NUMBER_WORDS and t not in _NUMBER_WORD_ONLY_CARDINAL:
            value, unit = float(_NUMBER_WORDS[t]), ""
        else:
            continue
        if unit in _ORDINAL:
            unit = ""
        if not unit and i + 1 < len(low) and low[i + 1] in _UNITS:
            unit = low[i + 1]
        if not unit and i > 0 and low[i - 1] in ("$", "€", "£"):
            unit = low[i - 1]
        nums.add((value, _UNITS.get(unit, unit)))
    # entities: capitalised words not opening a sentence, acronyms, months, code identifiers
    starts = {m.start(1) for m in _SENT_START.finditer(text)}
    ents: set[str] = set()
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if not tok[0].isalpha():
            continue
        lowtok = tok.lower()
        if lowtok in _MONTHS:
            ents.add(lowtok)
        elif _is_identifier(tok):
            ents.add(lowtok.strip("."))
        elif lowtok in _NOT_NAMES or lowtok in _UNITS or lowtok.translate(_APOS) in _NOT_NAMES:
            continue
        elif tok.isupper() and len(tok) >= 2:
            ents.add(_stem_entity(tok))
        elif tok[0].isupper() and m.start() not in starts:
            ents.add(_stem_entity(tok.split("'")[0]))
    # question types: read at the opening of each sentence only ("students who..." is not a "who" question)
    qt: set[str] = set()
    for sm in _SENTENCES.finditer(text):
        head = " ".join(sm.group(0).split()[:4])
        if head:
            for name, rx in _QTYPES:
                if rx.search(head):
                    qt.add(name)
    if "why" not in qt and _WHY_ANYWHERE.search(text):
        qt.add("why")
    content = frozenset(t for t in low if t not in _STOP and len(t) > 1)
    polar: dict[int, list[int]] = {}
    for t in low:
        for pi, side in _ANTONYM_INDEX.get(t, ()):
            polar.setdefault(pi, [0, 0])[side] += 1
    for bg in bigrams:
        for pi, side in _ANTONYM_INDEX.get(bg, ()):
            polar.setdefault(pi, [0, 0])[side] += 1
    return TextFacts(frozenset(tokens), {k: (v[0], v[1]) for k, v in polar.items()}, negs, frozenset(nums),
                     frozenset(ents), frozenset(qt), content, len(raw))


_WHY_ANYWHERE = re.compile(r"\b(?:and|or) why\b|\breasons? why\b", re.I)


def _entity_in(ent: str, tokens: frozenset[str], ents: frozenset[str]) -> bool:
    if ent in tokens or ent in ents or ent + "s" in tokens or (ent.endswith("s") and ent[:-1] in tokens):
        return True
    if len(ent) < 4 or "." in ent or "_" in ent:
        return False
    head = ent[:4]
    for other in ents | tokens:  # India ~ Indian(s), Canada ~ Canadian; never Java ~ JavaScript
        if len(other) >= 4 and other[:4] == head:
            n = 4
            while n < len(ent) and n < len(other) and ent[n] == other[n]:
                n += 1
            if ent[n:] in _DEMONYM_SUFFIXES and other[n:] in _DEMONYM_SUFFIXES:
                return True
    return False


_DEMONYM_SUFFIXES = frozenset({"", "a", "e", "n", "s", "an", "ans", "ian", "ians", "ns", "es", "ese", "ish", "i", "is"})


@dataclass(slots=True)
class CheckResult:
    passed: bool
    failed: tuple[str, ...]
    flags: tuple[float, ...]  # per FLAG_NAMES: 1.0 = fired (the first five are the enforceable checks)


# The enforceable checks (CHECK_NAMES), then softer signals the acceptance model weighs but that never
# reject on their own: something (an entity, a number, a specific question type) on one side only.
FLAG_NAMES = (*CHECK_NAMES, "entities_added", "numbers_added", "question_added")


def _polarity(q: TextFacts, c: TextFacts) -> bool:
    pa, pb = q.polar, c.polar
    if pa != pb:  # an antonym pair whose counts move in opposite directions ("on" -> "off")
        for pi in pa.keys() | pb.keys():
            ax, ay = pa.get(pi, (0, 0))
            bx, by = pb.get(pi, (0, 0))
            if (ax > bx and by > ay) or (bx > ax and ay > by):
                return True
    a, b = q.tokens, c.tokens
    only_a, only_b = a - b, b - a
    for t in only_a:  # like / dislike, legal / illegal, install / uninstall
        for p in _NEG_PREFIXES:
            if len(t) > len(p) + 3 and t.startswith(p) and t[len(p):] in only_b:
                return True
            if len(t) >= 4 and p + t in only_b:
                return True
    return False


def compare(q: TextFacts, c: TextFacts, enforce: Iterable[str] = CHECK_NAMES) -> CheckResult:
    """Run the checks on the query's and the candidate's facts; enforced checks that fire reject."""
    neg = (q.negations > 0) != (c.negations > 0)
    nums = nums_add = False
    if q.numbers != c.numbers and not _numbers_compatible(q.numbers, c.numbers):
        if q.numbers and c.numbers:
            nums = True
        else:
            nums_add = True
    miss_q = any(not _entity_in(e, c.tokens, c.entities) for e in q.entities)
    miss_c = any(not _entity_in(e, q.tokens, q.entities) for e in c.entities)
    # one named thing replaced by another (the other side has a name, or another word, in its place)
    ents = (miss_q and (miss_c or bool(c.content - q.content))) or (miss_c and bool(q.content - c.content))
    ents_add = (miss_q or miss_c) and not ents
    pol = _polarity(q, c)
    qa, qb = q.qtypes, c.qtypes
    question = bool(qa and qb) and not (qa & qb)  # why vs when: different questions
    q_add = qa != qb and not question
    flags = (float(neg), float(nums), float(ents), float(pol), float(question), float(ents_add), float(nums_add),
             float(q_add))
    failed = tuple(name for name, f in zip(CHECK_NAMES, flags) if f and name in enforce)
    return CheckResult(not failed, failed, flags)


def _numbers_compatible(a: frozenset, b: frozenset) -> bool:
    """Same values where one side left the unit out ("8 GB" vs "8GB", "15%" vs "fifteen percent")."""
    if {v for v, _ in a} != {v for v, _ in b}:
        return False
    units_a = {v: u for v, u in a}
    for v, u in b:
        ua = units_a.get(v, "")
        if u and ua and u != ua:
            return False
    return True


# -- learned acceptance ---------------------------------------------------------------------------------
FEATURE_NAMES = ("bias", "sim", "sim2", "jaccard", "len_ratio", *FLAG_NAMES, "unmatched_content", "short")


def pair_features(sim: float, q: TextFacts, c: TextFacts, result: CheckResult) -> np.ndarray:
    """The text-level features of a (query, candidate) pair, in FEATURE_NAMES order."""
    union = q.content | c.content
    jac = len(q.content & c.content) / len(union) if union else 1.0
    lr = min(q.n_words, c.n_words) / max(q.n_words, c.n_words, 1)
    unmatched = len(q.content ^ c.content) / max(len(union), 1)
    short = 1.0 / (1.0 + min(q.n_words, c.n_words))
    s = sim - 0.85  # centred: the model works near its most useful range
    return np.array((1.0, s, s * s, jac, lr, *result.flags, unmatched, short), dtype=np.float64)


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided upper bound on a binomial rate after k events in n trials."""
    if n == 0 or k >= n:
        return 1.0
    from scipy.stats import beta  # only at calibration time, never on the hot path

    return float(beta.ppf(confidence, k + 1, n - k))


def _sigmoid(z: float) -> float:
    if z < -30:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


class AcceptanceModel:
    """P(correct reuse | pair), and the acceptance threshold on it.

    Two kinds share one interface:

    * ``logistic`` — on :func:`pair_features` only (similarity, overlap, the check flags): few
      weights, little to overfit, a reasonable default for traffic unlike the data it was fitted on;
    * ``mlp`` — one hidden layer over ``[u*v, |u-v|, pair features]`` (u, v: the two embeddings), a
      learned metric on top of MiniLM; better on data like its training data (see bench/cache/RESULTS.md).

    :meth:`calibrate` picks the lowest probability threshold whose wrong-reuse rate on calibration data
    (wrong hits / *all* calibration requests) has a one-sided Clopper-Pearson upper bound ≤ δ.
    Feedback (:meth:`update`) takes one SGD step on the output layer.
    """

    def __init__(self, weights: Sequence[float] | np.ndarray | None = None, threshold: float = 0.5, delta: float = 0.02,
                 confidence: float = 0.95, l2: float = 1e-3, lr: float = 0.05, *,
                 hidden: tuple[np.ndarray, np.ndarray] | None = None):
        self.w = np.asarray(weights if weights is not None else _DEFAULT_WEIGHTS, dtype=np.float64)
        self.threshold = threshold
        self.delta = delta
        self.confidence = confidence
        self.l2 = l2
        self.lr = lr
        self.hidden = hidden  # (W1 (in, h) float32, b1 (h,)) for the mlp kind; w = (bias, h weights)
        self.scaler: tuple[np.ndarray, np.ndarray] | None = None  # (mean, scale) folded into W1, b1
        self.updates = 0
        self.calibration: dict = {}

    @property
    def kind(self) -> str:
        return "mlp" if self.hidden is not None else "logistic"

    # -- scoring (hot path) -------------------------------------------------------------------------------
    def state(self, x: np.ndarray, u: np.ndarray | None = None, v: np.ndarray | None = None) -> np.ndarray:
        """The output layer's input: the features (logistic) or the hidden activations (mlp)."""
        if self.hidden is None:
            return x
        W1, b1 = self.hidden
        if u is None or v is None:
            raise ValueError("the mlp acceptance model reads both embeddings")
        z = np.concatenate((u * v, np.abs(u - v), x[1:].astype(np.float32)))
        h = z @ W1
        h += b1
        np.maximum(h, 0.0, out=h)
        return np.concatenate(((1.0,), h.astype(np.float64)))

    def prob_state(self, state: np.ndarray) -> float:
        return _sigmoid(float(self.w @ state))

    def prob(self, x: np.ndarray, u: np.ndarray | None = None, v: np.ndarray | None = None) -> float:
        return self.prob_state(self.state(x, u, v))

    def accept(self, x: np.ndarray, u: np.ndarray | None = None, v: np.ndarray | None = None) -> tuple[bool, float]:
        p = self.prob(x, u, v)
        return p >= self.threshold, p

    def similarity_floor(self) -> float:
        """The lowest cosine at which any candidate could be accepted (logistic kind; 0.0 for the mlp).

        Every feature but the similarity is bounded, so below this floor the probability cannot reach the
        threshold whatever the texts say: the lookup skips such candidates before any text work.
        """
        if self.hidden is not None or not math.isfinite(self.threshold) or not 0 < self.threshold < 1:
            return 0.0 if self.threshold <= 0 or self.hidden is not None else 1.01
        target = math.log(self.threshold / (1 - self.threshold))
        best_rest = float(self.w[0])
        for name, wi in zip(FEATURE_NAMES[3:], self.w[3:]):
            best_rest += max(0.0, wi) * _FEATURE_MAX.get(name, 1.0)
        for s in np.arange(0.0, 1.0005, 0.0005):
            c = s - 0.85
            if self.w[1] * c + self.w[2] * c * c + best_rest >= target:
                return max(0.0, float(s) - 0.0005)
        return 1.01

    # -- fitting ------------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, iters: int = 100) -> "AcceptanceModel":
        """Logistic regression on pair features (L2, Newton's method: the features are few)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        w = np.zeros(X.shape[1])
        reg = self.l2 * len(y) * np.ones(X.shape[1])
        reg[0] = 0.0
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -30, 30)))
            g = X.T @ (p - y) + reg * w
            H = (X * (p * (1 - p))[:, None]).T @ X + np.diag(reg + 1e-9)
            step = np.linalg.solve(H, g)
            w -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        self.w = w
        self.hidden = None
        return self

    def calibrate(self, probs: np.ndarray, y: np.ndarray, delta: float | None = None,
                  confidence: float | None = None, n_total: int | None = None) -> float:
        """Choose the threshold on held-out calibration candidates.

        ``probs``/``y``: the calibration candidates that passed the rule checks (y=1: a correct reuse);
        ``n_total``: the number of requests they came from (default len(y)), the rate's denominator.
        """
        from scipy.stats import beta

        delta = self.delta if delta is None else delta
        confidence = self.confidence if confidence is None else confidence
        probs = np.asarray(probs, dtype=np.float64)
        y = np.asarray(y)
        n = len(y) if n_total is None else n_total
        order = np.argsort(-probs, kind="stable")
        p_sorted = probs[order]
        wrong = np.cumsum(1 - y[order])
        bounds = np.where(wrong < n, beta.ppf(confidence, wrong + 1, np.maximum(n - wrong, 1)), 1.0)
        last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]
        feasible = np.nonzero((bounds <= delta) & last_of_tie)[0]
        if feasible.size:
            i = int(feasible.max())
            self.threshold, hits, k = float(p_sorted[i]), i + 1, int(wrong[i])
        else:
            self.threshold, hits, k = float("inf"), 0, 0  # nothing can be served within δ
        self.delta, self.confidence = delta, confidence
        self.calibration = {"n": int(n), "hits": hits, "wrong": k, "delta": delta, "confidence": confidence,
                            "threshold": self.threshold, "upper_bound": clopper_pearson_upper(k, n, confidence)}
        return self.threshold

    def update(self, state: np.ndarray, correct: bool) -> None:
        """One online SGD step on the output layer from feedback on a served hit."""
        p = self.prob_state(state)
        reg = np.r_[0.0, self.w[1:]] * self.l2
        self.w = self.w - self.lr * ((p - float(correct)) * state + reg)
        self.updates += 1

    # -- persistence: plain arrays + JSON, no pickle -------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": self.kind, "features": list(FEATURE_NAMES), "weights": self.w.tolist(),
                "threshold": self.threshold, "delta": self.delta, "confidence": self.confidence,
                "calibration": self.calibration}

    @classmethod
    def from_dict(cls, d: dict, hidden: tuple[np.ndarray, np.ndarray] | None = None) -> "AcceptanceModel":
        if tuple(d.get("features", ())) != FEATURE_NAMES:
            raise ValueError("acceptance model features do not match this version of checks.py")
        m = cls(d["weights"], d["threshold"], d.get("delta", 0.02), d.get("confidence", 0.95), hidden=hidden)
        m.calibration = d.get("calibration", {})
        return m

    def save(self, path: str | Path) -> None:
        """``path``.json (weights of the output layer, threshold, calibration) [+ ``path``.npz (hidden layer)]."""
        path = Path(path)
        path.with_suffix(".json").write_text(json.dumps(self.to_dict(), indent=1))
        if self.hidden is not None:
            # stored unscaled (well-conditioned, so float16 is enough) with the input scaler beside it
            W1, b1 = self.hidden
            mean, scale = self.scaler if self.scaler is not None else (np.zeros(W1.shape[0]), np.ones(W1.shape[0]))
            raw = W1 * scale[:, None]
            np.savez_compressed(path.with_suffix(".npz"), W1=raw.astype(np.float16), b1=(b1 + mean @ W1).astype(np.float32),
                                mean=mean.astype(np.float32), scale=scale.astype(np.float32))

    @classmethod
    def load(cls, path: str | Path) -> "AcceptanceModel":
        path = Path(path)
        d = json.loads(path.with_suffix(".json").read_text())
        hidden = None
        if d.get("kind") == "mlp":
            with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
                hidden, scaler = _fold(z["W1"], z["b1"], z["mean"], z["scale"])
            m = cls.from_dict(d, hidden)
            m.scaler = scaler
            return m
        return cls.from_dict(d, hidden)

    def with_threshold(self, delta: float) -> "AcceptanceModel":
        """A copy using the threshold stored for ``delta`` (see ``thresholds`` in the calibration)."""
        m = AcceptanceModel(self.w.copy(), self.threshold, delta, self.confidence, hidden=self.hidden)
        m.calibration = dict(self.calibration)
        by_delta = self.calibration.get("thresholds", {})
        if str(delta) in by_delta:
            m.threshold = float(by_delta[str(delta)])
        return m


def _fold(W1, b1, mean, scale):
    """Fold a standard scaler into the first layer: ((z - mean) / scale) @ W1 + b1 == z @ W1' + b1'."""
    W1 = W1.astype(np.float32)
    mean = mean.astype(np.float32)
    scale = scale.astype(np.float32)
    W = W1 / scale[:, None]
    b = b1.astype(np.float32) - (mean / scale) @ W1
    return (W.astype(np.float32), b.astype(np.float32)), (mean, scale)


_FEATURE_MAX = {"short": 0.5}  # the others are within [0, 1]


# Used when no fitted model is shipped: similarity dominates, every check flag counts against.
_DEFAULT_WEIGHTS = [-1.0, 40.0, 0.0, 0.0, 0.0, -3.0, -3.0, -3.0, -3.0, -3.0, -1.0, -1.0, -1.0, 0.0, 0.0]
