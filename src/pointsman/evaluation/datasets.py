"""Readers that turn per-prompt model outcomes into one in-memory shape, :class:`OutcomeTable`.

Supported layouts
-----------------
* RouteLLM's wide CSVs (``routellm/mmlu/<subject>.csv``, ``routellm/gsm8k_responses.csv``):
  ``prompt`` then one boolean column per model (and for GSM8K ``<model>_response`` text columns).
  RouteLLM's ``*_contaminated_prompts.jsonl`` (the ``eval_prompt`` field) are excluded by default.
* arena-bench (``question.jsonl``, ``scores.jsonl``, ``answers.jsonl``, ``prices.csv``).
* AlpacaEval per-instruction judgments (``instructions.jsonl``, ``outcomes.jsonl``).
* The documented **long format**, JSONL or CSV, one row per (prompt, model) outcome::

      {"prompt": "...", "model": "gpt-4o", "score": 1.0,
       "input_tokens": 120, "output_tokens": 350, "cost": 0.0042,   # optional
       "prompt_id": "q17", "group": "math",                         # optional
       "source": "support-chat", "label_kind": "judge_score"}       # optional: see below

  ``score`` is any number where higher is better (0/1 correctness, a 1-10 judge score, ...).
  Rows with the same ``prompt_id`` (or, without it, the same prompt text) form one prompt;
  several rows for one (prompt, model) pair are averaged. ``cost`` (USD) wins over tokens x prices;
  prices (USD per million tokens) come from a prices CSV ``model,input_usd_per_mtok,output_usd_per_mtok``.
  ``source`` names the data set a row comes from and ``label_kind`` what its score means:
  ``correctness``, ``judge_score`` (an absolute grade) or ``preference`` (the probability of beating a
  reference model's answer; then ``reference_tokens`` gives that answer's length). Sources are
  harmonised before training (evaluation/labels.py), so scores of different kinds can be mixed.

Token counts where a source gives none are estimated as ``ceil(chars / 4)``
(:data:`CHARS_PER_TOKEN`), the usual rule of thumb, and flagged in ``OutcomeTable.notes``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pointsman.paths import default_cache_dir

__all__ = [
    "CHARS_PER_TOKEN",
    "ModelPrice",
    "OutcomeTable",
    "load_routellm_mmlu",
    "load_routellm_gsm8k",
    "load_arena_bench",
    "load_alpacaeval",
    "load_long_format",
    "LABEL_KINDS",
    "write_long_format",
    "read_prices_csv",
    "embed_prompts",
    "default_cache_dir",
    "AnswerTable",
    "load_routellm_gsm8k_answers",
    "load_arena_bench_answers",
    "load_long_format_answers",
    "load_answer_table",
]

CHARS_PER_TOKEN = 4.0

# RouteLLM's blended cost assumption (USD per million tokens), see its paper and the data README.
ROUTELLM_BLENDED_PRICES = {
    "gpt-4-1106-preview": 24.7,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.24,
}
ROUTELLM_STRONG = "gpt-4-1106-preview"
# what a source's score means (OutcomeTable.label_kinds); the long format's optional `label_kind` column
LABEL_KINDS = ("correctness", "judge_score", "preference")
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"


@dataclass(frozen=True)
class ModelPrice:
    """List price in USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens, output_tokens):
        return (np.asarray(input_tokens, dtype=float) * self.input_per_mtok
                + np.asarray(output_tokens, dtype=float) * self.output_per_mtok) / 1e6


@dataclass
class OutcomeTable:
    """Per-prompt outcomes of several models.

    Attributes:
        name: data set name (for reports).
        prompts: the n prompt texts (what a router sees).
        models: the m model names, column order of every (n, m) matrix.
        scores: (n, m) float, higher is better, NaN where a model has no outcome for a prompt.
        cost: (n, m) float USD per prompt (realised where the data has answers, else estimated), NaN
            where unknown.
        input_tokens: (n,) float, prompt tokens (estimated as chars/4 unless the source says).
        output_tokens: (n, m) float or None.
        prices: per-model list prices, where known.
        groups: optional category label per prompt (e.g. the MMLU subject). For baselines and
            stratification only: a router must not read it at inference time.
        ids: stable prompt ids.
        score_range: (low, high) of the score scale, used to normalise scores to [0, 1].
        strong, weak: the reference pair for two-model metrics (PGR/APGR/CPT), if the data has one.
        notes: free-text remarks about how the table was built (estimates, exclusions).
        sources: per-prompt source name (which data set the row came from), or None (all one source:
            ``name``). Label harmonisation (evaluation/labels.py) and cross-source tests read it.
        label_kinds: what each source's score means: ``correctness`` (0/1 or a share correct),
            ``judge_score`` (an absolute grade, e.g. 1-10), ``preference`` (probability of beating a
            reference model's answer, which is then in ``reference_tokens``: its length per prompt).
    """

    name: str
    prompts: list[str]
    models: list[str]
    scores: np.ndarray
    cost: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray | None = None
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    groups: list[str] | None = None
    ids: list[str] = field(default_factory=list)  # empty: "0", "1", ... (set in __post_init__)
    score_range: tuple[float, float] = (0.0, 1.0)
    strong: str | None = None
    weak: str | None = None
    notes: list[str] = field(default_factory=list)
    sources: list[str] | None = None
    label_kinds: dict[str, str] = field(default_factory=dict)
    reference_tokens: np.ndarray | None = None
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> its own (strong, weak), if stacked

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.cost = np.asarray(self.cost, dtype=np.float64)
        self.input_tokens = np.asarray(self.input_tokens, dtype=np.float64)
        if self.scores.shape != (n, m) or self.cost.shape != (n, m):
            raise ValueError(f"scores/cost must be ({n}, {m}); got {self.scores.shape}/{self.cost.shape}")
        if self.input_tokens.shape != (n,):
            raise ValueError("input_tokens must have one entry per prompt")
        if self.output_tokens is not None:
            self.output_tokens = np.asarray(self.output_tokens, dtype=np.float64)
        if not self.ids:
            self.ids = [str(i) for i in range(n)]
        if self.groups is not None and len(self.groups) != n:
            raise ValueError("groups must have one entry per prompt")
        if self.sources is not None and len(self.sources) != n:
            raise ValueError("sources must have one entry per prompt")
        unknown = set(self.label_kinds.values()) - set(LABEL_KINDS)
        if unknown:
            raise ValueError(f"unknown label_kind {sorted(unknown)}; choose from {', '.join(LABEL_KINDS)}")

    def source_of_rows(self) -> list[str]:
        return list(self.sources) if self.sources is not None else [self.name] * len(self.prompts)

    def pair_of(self, source: str) -> tuple[str | None, str | None]:
        """The (strong, weak) reference pair of one source (a stacked table keeps each source's own)."""
        return self.pairs.get(source, (self.strong, self.weak))

    def label_kind(self, source: str) -> str:
        return self.label_kinds.get(source, "correctness" if self.score_range == (0.0, 1.0) else "judge_score")

    def __len__(self) -> int:
        return len(self.prompts)

    def model_index(self, name: str) -> int:
        return self.models.index(name)

    def pair_index(self) -> tuple[int, int]:
        """The columns of the reference pair (strong, weak); ValueError when the table has none."""
        if self.strong is None or self.weak is None:
            raise ValueError(f"{self.name}: no strong/weak reference pair")
        return self.model_index(self.strong), self.model_index(self.weak)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "OutcomeTable":
        """Rows ``idx`` (a list of indices or a boolean mask) as a new table."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        take = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return replace(
            self,
            prompts=take(self.prompts),
            scores=self.scores[idx],
            cost=self.cost[idx],
            input_tokens=self.input_tokens[idx],
            output_tokens=None if self.output_tokens is None else self.output_tokens[idx],
            groups=None if self.groups is None else take(self.groups),
            ids=take(self.ids),
            notes=list(self.notes),
            sources=None if self.sources is None else take(self.sources),
            reference_tokens=None if self.reference_tokens is None else self.reference_tokens[idx],
        )

    def select_models(self, names: Sequence[str]) -> "OutcomeTable":
        cols = [self.model_index(n) for n in names]
        return replace(
            self,
            models=list(names),
            scores=self.scores[:, cols],
            cost=self.cost[:, cols],
            output_tokens=None if self.output_tokens is None else self.output_tokens[:, cols],
            prices={k: v for k, v in self.prices.items() if k in names},
            strong=self.strong if self.strong in names else None,
            weak=self.weak if self.weak in names else None,
        )

    def complete_rows(self) -> np.ndarray:
        """Boolean mask of prompts with a score for every model."""
        return ~np.isnan(self.scores).any(axis=1)

    def normalised_scores(self) -> np.ndarray:
        lo, hi = self.score_range
        return (self.scores - lo) / (hi - lo)

    def summary(self) -> str:
        def column_means(values: np.ndarray) -> np.ndarray:  # NaN for a column without values, without a warning
            known = ~np.isnan(values)
            return np.where(known.any(axis=0), np.where(known, values, 0).sum(axis=0) / np.maximum(known.sum(axis=0), 1),
                            np.nan)

        means, costs = column_means(self.scores), column_means(self.cost)
        lines = [f"{self.name}: {len(self)} prompts x {len(self.models)} models"]
        for j in np.argsort(-means):
            cost = f"${costs[j]:.6f}" if not np.isnan(costs[j]) else "unknown"
            lines.append(f"  {self.models[j]:<40s} score {means[j]:.3f}  cost/prompt {cost}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers

def estimate_tokens(texts: Iterable[str]) -> np.ndarray:
    return np.array([math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts], dtype=np.float64)


def _read_contaminated(path: Path) -> set[str]:
    out: set[str] = set()
    if not path.exists():
        return out
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                out.add(json.loads(line)["eval_prompt"])
    return out


def _parse_bool(v: str) -> float:
    v = v.strip()
    if v in ("True", "true", "1", "1.0"):
        return 1.0
    if v in ("False", "false", "0", "0.0"):
        return 0.0
    if v == "":
        return float("nan")
    return float(v)


def _csv_field_limit() -> None:
    # GSM8K response columns can exceed the csv module's default field size.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_prices_csv(path: str | os.PathLike) -> dict[str, ModelPrice]:
    """``model,input_usd_per_mtok,output_usd_per_mtok[,...]`` -> prices."""
    columns = ("model", "input_usd_per_mtok", "output_usd_per_mtok")
    prices: dict[str, ModelPrice] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [name.strip() for name in reader.fieldnames or []]
        if not set(columns) <= set(header):
            raise ValueError(f"{path}: a prices CSV needs the columns {','.join(columns)} "
                             f"(it has {','.join(header) or 'no header'})")
        reader.fieldnames = header
        for row in reader:
            values = []
            for column in columns[1:]:
                try:
                    values.append(float(row[column]))
                except (TypeError, ValueError):
                    raise ValueError(f"{path}:{reader.line_num}: {column} must be a number (USD per million tokens), "
                                     f"got {row[column]!r}") from None
            prices[row["model"].strip()] = ModelPrice(*values)
    return prices


# ----------------------------------------------------------------------------- RouteLLM

def _routellm_table(name, prompts, cols, models, out_tokens, groups, notes) -> OutcomeTable:
    n = len(prompts)
    scores = np.array([cols[mdl] for mdl in models], dtype=np.float64).T.reshape(n, len(models))
    in_tok = estimate_tokens(prompts)
    prices = {m: ModelPrice(ROUTELLM_BLENDED_PRICES[m], ROUTELLM_BLENDED_PRICES[m])
              for m in models if m in ROUTELLM_BLENDED_PRICES}
    cost = np.full((n, len(models)), np.nan)
    for j, mdl in enumerate(models):
        if mdl in prices:
            cost[:, j] = prices[mdl].cost(in_tok, out_tokens[:, j])
    return OutcomeTable(
        name=name, prompts=prompts, models=models, scores=scores, cost=cost,
        input_tokens=in_tok, output_tokens=out_tokens, prices=prices, groups=groups,
        score_range=(0.0, 1.0), label_kinds={name: "correctness"},
        strong=ROUTELLM_STRONG if ROUTELLM_STRONG in models else None,
        weak=ROUTELLM_WEAK if ROUTELLM_WEAK in models else None,
        notes=notes,
    )


def load_routellm_mmlu(root: str | os.PathLike, exclude_contaminated: bool = True) -> OutcomeTable:
    """All ``<root>/mmlu/*.csv`` (57 subjects), subject as the group label.

    ``root`` is the ``routellm`` folder. Costs use RouteLLM's blended prices with the prompt's
    estimated tokens plus one output token (the answer letter).
    """
    root = Path(root)
    files = sorted((root / "mmlu").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no MMLU CSVs under {root / 'mmlu'}")
    contaminated = _read_contaminated(root / "mmlu_contaminated_prompts.jsonl") if exclude_contaminated else set()
    prompts: list[str] = []
    groups: list[str] = []
    models: list[str] | None = None
    cols: dict[str, list[float]] = {}
    dropped = 0
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            mdl = header[1:]
            if models is None:
                models = mdl
                cols = {m: [] for m in models}
            elif mdl != models:
                raise ValueError(f"{f}: model columns differ from the other files")
            for row in reader:
                if row[0] in contaminated:
                    dropped += 1
                    continue
                prompts.append(row[0])
                groups.append(f.stem)
                for m, v in zip(models, row[1:]):
                    cols[m].append(_parse_bool(v))
    assert models is not None
    out_tok = np.ones((len(prompts), len(models)))
    notes = [f"RouteLLM MMLU, {len(files)} subjects; {dropped} contaminated prompts excluded",
             "input tokens estimated as chars/4; output 1 token; RouteLLM blended prices"]
    return _routellm_table("mmlu", prompts, cols, models, out_tok, groups, notes)


def load_routellm_gsm8k(root: str | os.PathLike, exclude_contaminated: bool = True) -> OutcomeTable:
    """``<root>/gsm8k_responses.csv``; output tokens estimated from each model's response."""
    _csv_field_limit()
    root = Path(root)
    contaminated = _read_contaminated(root / "gsm8k_contaminated_prompts.jsonl") if exclude_contaminated else set()
    with (root / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        models = [h for h in header[1:] if not h.endswith("_response")]
        pos = {h: i for i, h in enumerate(header)}
        prompts: list[str] = []
        cols: dict[str, list[float]] = {m: [] for m in models}
        outs: list[list[float]] = []
        dropped = 0
        for row in reader:
            if row[0] in contaminated:
                dropped += 1
                continue
            prompts.append(row[0])
            for m in models:
                cols[m].append(_parse_bool(row[pos[m]]))
            outs.append([math.ceil(len(row[pos[m + "_response"]]) / CHARS_PER_TOKEN)
                         if (m + "_response") in pos else 1.0 for m in models])
    notes = [f"RouteLLM GSM8K; {dropped} contaminated prompts excluded",
             "tokens estimated as chars/4 of prompt and of each model's response; RouteLLM blended prices"]
    return _routellm_table("gsm8k", prompts, cols, models, np.array(outs, dtype=np.float64), None, notes)


# ----------------------------------------------------------------------------- arena-bench

def _read_jsonl(path: Path):
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield json.loads(line)


def load_arena_bench(root: str | os.PathLike, prices_path: str | os.PathLike | None = None) -> OutcomeTable:
    """arena-bench: prompt = ``turns[0]``; scores 1-10; cost = realised tokens (chars/4) x list price."""
    root = Path(root)
    questions = list(_read_jsonl(root / "question.jsonl"))
    qids = [q["question_id"] for q in questions]
    qpos = {q: i for i, q in enumerate(qids)}
    prompts = [q["turns"][0] if isinstance(q["turns"][0], str) else q["turns"][0].get("content", "")
               for q in questions]
    score_rows = list(_read_jsonl(root / "scores.jsonl"))
    models = sorted({r["model"] for r in score_rows})
    mpos = {m: j for j, m in enumerate(models)}
    n, m = len(qids), len(models)
    acc = np.zeros((n, m))
    cnt = np.zeros((n, m))
    for r in score_rows:
        if r["question_id"] in qpos and r["model"] in mpos and r["score"] is not None:
            acc[qpos[r["question_id"]], mpos[r["model"]]] += float(r["score"])
            cnt[qpos[r["question_id"]], mpos[r["model"]]] += 1
    with np.errstate(invalid="ignore"):
        scores = np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)
    out_tok = np.full((n, m), np.nan)
    ans_path = root / "answers.jsonl"
    if ans_path.exists():
        for r in _read_jsonl(ans_path):
            if r["question_id"] in qpos and r["model"] in mpos:
                out_tok[qpos[r["question_id"]], mpos[r["model"]]] = math.ceil(len(r["answer"]) / CHARS_PER_TOKEN)
    # Where an answer is missing, use that model's mean answer length.
    col_mean = np.nanmean(np.where(np.isnan(out_tok), np.nan, out_tok), axis=0)
    out_tok = np.where(np.isnan(out_tok), col_mean[None, :], out_tok)
    prices = read_prices_csv(prices_path or (root / "prices.csv"))
    in_tok = estimate_tokens(prompts)
    cost = np.full((n, m), np.nan)
    for mdl, j in mpos.items():
        if mdl in prices:
            cost[:, j] = prices[mdl].cost(in_tok, out_tok[:, j])
    notes = ["arena-bench-v1 (GPT-4 judge, 1-10); tokens estimated as chars/4 of question and answer",
             "cost = realised answer length x list price (prices.csv)"]
    return OutcomeTable(
        name="arena-bench", prompts=prompts, models=models, scores=scores, cost=cost,
        input_tokens=in_tok, output_tokens=out_tok, prices=prices, ids=qids,
        score_range=(1.0, 10.0), label_kinds={"arena-bench": "judge_score"}, strong="gpt-4-1106-preview" if "gpt-4-1106-preview" in mpos else None,
        weak="Mixtral-8x7B-Instruct-v0.1" if "Mixtral-8x7B-Instruct-v0.1" in mpos else None,
        notes=notes,
    )


ALPACAEVAL_REFERENCE = "gpt4_1106_preview"


def load_alpacaeval(root: str | os.PathLike, weak: str = "gpt-3.5-turbo-1106") -> OutcomeTable:
    """AlpacaEval per-instruction judgments: score = the judge's probability that a model's answer beats the
    reference model's (GPT-4-1106; it scores 0.5 against itself). Lengths are kept (output tokens = chars/4,
    ``reference_tokens``) because the judge favours long answers: harmonised training removes that (see
    :func:`pointsman.evaluation.labels.gain_labels`). No prices: cost is NaN."""
    root = Path(root)
    instructions = list(_read_jsonl(root / "instructions.jsonl"))
    ids = [r["id"] for r in instructions]
    pos = {k: i for i, k in enumerate(ids)}
    rows = list(_read_jsonl(root / "outcomes.jsonl"))
    models = sorted({r["model"] for r in rows})
    mpos = {m: j for j, m in enumerate(models)}
    n, m = len(ids), len(models)
    scores = np.full((n, m), np.nan)
    out_tok = np.full((n, m), np.nan)
    ref_tok = np.full(n, np.nan)
    for r in rows:
        if r["id"] not in pos or r.get("win") is None:
            continue
        i, j = pos[r["id"]], mpos[r["model"]]
        scores[i, j] = float(r["win"])
        out_tok[i, j] = math.ceil(float(r.get("output_chars") or 0) / CHARS_PER_TOKEN)
        if r.get("reference_chars"):
            ref_tok[i] = math.ceil(float(r["reference_chars"]) / CHARS_PER_TOKEN)
    prompts = [r["instruction"] for r in instructions]
    table = OutcomeTable(
        name="alpacaeval", prompts=prompts, models=models, scores=scores, cost=np.full((n, m), np.nan),
        input_tokens=estimate_tokens(prompts), output_tokens=out_tok, groups=[r.get("dataset") or "" for r in instructions],
        ids=ids, score_range=(0.0, 1.0), strong=ALPACAEVAL_REFERENCE if ALPACAEVAL_REFERENCE in mpos else None,
        weak=weak if weak in mpos else None,
        notes=["AlpacaEval 2.0: GPT-4-turbo judge's preference against GPT-4-1106's answer (length-biased)"],
        label_kinds={"alpacaeval": "preference"}, reference_tokens=ref_tok,
    )
    return table


# ----------------------------------------------------------------------------- long format

def _iter_long_rows(path: Path):
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        yield from _read_jsonl(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: long format must be .jsonl or .csv")


def _num(v) -> float:
    if v is None or v == "":
        return float("nan")
    return float(v)


def load_long_format(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    prices: dict[str, ModelPrice] | str | os.PathLike | None = None,
    name: str = "long",
    score_range: tuple[float, float] | None = None,
    strong: str | None = None,
    weak: str | None = None,
) -> OutcomeTable:
    """Read the long format (see module docstring) from one or more JSONL/CSV files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if prices is not None and not isinstance(prices, dict):
        prices = read_prices_csv(prices)
    prices = dict(prices or {})
    key_pos: dict[str, int] = {}
    prompts: list[str] = []
    ids: list[str] = []
    groups: list[str | None] = []
    in_tok: list[float] = []
    model_pos: dict[str, int] = {}
    cells: dict[tuple[int, int], list[list[float]]] = {}
    row_sources: list[str] = []
    references: list[float] = []
    label_kinds: dict[str, str] = {}
    for p in paths:
        for lineno, row in enumerate(_iter_long_rows(Path(p)), 1):
            try:
                prompt = row.get("prompt")
                if prompt is None and "messages" in row:
                    prompt = "\n".join(str(mm.get("content", "")) for mm in row["messages"])
                model = str(row["model"])
                score = _num(row["score"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{p}:{lineno}: needs prompt, model, score ({exc})") from None
            key = str(row.get("prompt_id") or "") or prompt
            if key not in key_pos:
                key_pos[key] = len(prompts)
                prompts.append(prompt)
                ids.append(str(row.get("prompt_id") or len(ids)))
                groups.append(row.get("group") or None)
                in_tok.append(_num(row.get("input_tokens")))
                row_sources.append(str(row.get("source") or name))
                references.append(_num(row.get("reference_tokens")))
            kind = row.get("label_kind")
            if kind:
                source = row_sources[key_pos[key]]
                if label_kinds.setdefault(source, str(kind)) != kind:
                    raise ValueError(f"{p}:{lineno}: source {source!r} has two label kinds ({label_kinds[source]}, {kind})")
            i = key_pos[key]
            if math.isnan(in_tok[i]):
                in_tok[i] = _num(row.get("input_tokens"))
            j = model_pos.setdefault(model, len(model_pos))
            cells.setdefault((i, j), []).append(
                [score, _num(row.get("output_tokens")), _num(row.get("cost")), _num(row.get("input_tokens"))])
    n, m = len(prompts), len(model_pos)
    if n == 0:
        raise ValueError("no rows")
    scores = np.full((n, m), np.nan)
    out_tok = np.full((n, m), np.nan)
    cost = np.full((n, m), np.nan)
    est = np.array([math.ceil(len(t) / CHARS_PER_TOKEN) for t in prompts], dtype=np.float64)
    in_arr = np.array(in_tok, dtype=np.float64)
    estimated_in = np.isnan(in_arr)
    in_arr = np.where(estimated_in, est, in_arr)
    models = list(model_pos)
    for (i, j), vals in cells.items():
        a = np.array(vals, dtype=np.float64)
        scores[i, j] = np.nanmean(a[:, 0]) if not np.isnan(a[:, 0]).all() else np.nan
        if not np.isnan(a[:, 1]).all():
            out_tok[i, j] = np.nanmean(a[:, 1])
        if not np.isnan(a[:, 2]).all():
            cost[i, j] = np.nanmean(a[:, 2])
    # Fill costs from tokens x prices where not given; missing output tokens -> the model's mean.
    col_mean_out = np.array([np.nanmean(out_tok[:, j]) if not np.isnan(out_tok[:, j]).all() else 0.0
                             for j in range(m)])
    for j, mdl in enumerate(models):
        if mdl not in prices:
            continue
        ot = np.where(np.isnan(out_tok[:, j]), col_mean_out[j], out_tok[:, j])
        fill = np.isnan(cost[:, j]) & ~np.isnan(scores[:, j])
        cost[fill, j] = prices[mdl].cost(in_arr[fill], ot[fill])
    if score_range is None:
        lo, hi = float(np.nanmin(scores)), float(np.nanmax(scores))
        score_range = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi if hi > lo else lo + 1.0)
    notes = [f"long format from {len(paths)} file(s)"]
    if estimated_in.any():
        notes.append(f"{int(estimated_in.sum())} prompts' input tokens estimated as chars/4")
    missing_cost = [mdl for j, mdl in enumerate(models) if np.isnan(cost[:, j]).all()]
    if missing_cost:
        notes.append("no cost or price for: " + ", ".join(missing_cost))
    has_groups = any(g is not None for g in groups)
    return OutcomeTable(
        name=name, prompts=prompts, models=models, scores=scores, cost=cost, input_tokens=in_arr,
        output_tokens=out_tok, prices={k: v for k, v in prices.items() if k in model_pos},
        groups=[g or "" for g in groups] if has_groups else None, ids=ids,
        score_range=score_range, strong=strong, weak=weak, notes=notes,
        sources=row_sources if set(row_sources) != {name} else None, label_kinds=label_kinds,
        reference_tokens=np.array(references) if not np.isnan(references).all() else None,
    )


def write_long_format(table: OutcomeTable, path: str | os.PathLike) -> None:
    """Write a table as long-format JSONL (one row per known outcome)."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, prompt in enumerate(table.prompts):
            for j, mdl in enumerate(table.models):
                s = table.scores[i, j]
                if np.isnan(s):
                    continue
                row = {"prompt_id": table.ids[i], "prompt": prompt, "model": mdl, "score": float(s),
                       "input_tokens": float(table.input_tokens[i])}
                if table.output_tokens is not None and not np.isnan(table.output_tokens[i, j]):
                    row["output_tokens"] = float(table.output_tokens[i, j])
                if not np.isnan(table.cost[i, j]):
                    row["cost"] = float(table.cost[i, j])
                if table.groups is not None:
                    row["group"] = table.groups[i]
                source = table.source_of_rows()[i]
                if table.sources is not None:
                    row["source"] = source
                row["label_kind"] = table.label_kind(source)
                if table.reference_tokens is not None and not np.isnan(table.reference_tokens[i]):
                    row["reference_tokens"] = float(table.reference_tokens[i])
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- embedding cache


def _emb_cache_path(prompts: Sequence[str], encoder, cache_dir) -> Path:
    h = hashlib.sha256()
    h.update(f"{encoder.model_id}|{encoder.max_seq_length}|{len(prompts)}".encode())
    for t in prompts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return d / "emb" / f"{h.hexdigest()}.npz"


def embed_prompts(prompts: Sequence[str], encoder=None, cache_dir: str | os.PathLike | None = None,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and cheap prompt features for ``prompts``; the embeddings are cached on disk.

    The cache key is a SHA-256 of the encoder's id, its window and every text, so a change to any
    of them misses. Files live in ``<cache_dir>/emb/<sha>.npz`` (outside the repo) and hold the
    embeddings and the token counts; the features are recomputed (cheap), so changing them needs
    no re-embedding. Returns ``(embeddings float32 (n, 384), features float32 (n, F))``.
    """
    from pointsman.embed.features import prompt_features

    if encoder is None:
        from pointsman.embed.encoder import MiniLMEncoder
        encoder = MiniLMEncoder()
    path = _emb_cache_path(prompts, encoder, cache_dir)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            emb, n_tok = z["emb"], z["n_tokens"]
    else:
        ids, n_tok = encoder.tokenize(list(prompts))
        emb = encoder.encode_ids(ids, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, emb=emb, n_tokens=n_tok)
        os.replace(tmp, path)
    return emb, prompt_features(list(prompts), n_tok, encoder.max_seq_length)


# ----------------------------------------------------------------------------- answers (for verifiers)

@dataclass
class AnswerTable:
    """Per-prompt outcomes plus the answer texts behind them: what a verifier trains on.

    ``table`` is the usual :class:`OutcomeTable` (n prompts x m models); ``answers[i][j]`` is model j's
    answer to prompt i, or None where the data has none. Rows without an answer cannot train a verifier
    but still count for routing.
    """

    table: OutcomeTable
    answers: list[list[str | None]]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(prompt index, model index) of every cell with both an answer and a score, row-major."""
        ii, jj = [], []
        for i, row in enumerate(self.answers):
            for j, a in enumerate(row):
                if a is not None and not np.isnan(self.table.scores[i, j]):
                    ii.append(i)
                    jj.append(j)
        return np.array(ii, dtype=np.int64), np.array(jj, dtype=np.int64)


def load_routellm_gsm8k_answers(root: str | os.PathLike, exclude_contaminated: bool = True) -> AnswerTable:
    """GSM8K with each model's full response (``<model>_response``), aligned to :func:`load_routellm_gsm8k`."""
    _csv_field_limit()
    root = Path(root)
    table = load_routellm_gsm8k(root, exclude_contaminated)
    by_prompt: dict[str, list[str | None]] = {}
    with (root / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_prompt[row["prompt"]] = [row.get(m + "_response") for m in table.models]
    return AnswerTable(table, [by_prompt[p] for p in table.prompts])


def load_arena_bench_answers(root: str | os.PathLike, prices_path: str | os.PathLike | None = None) -> AnswerTable:
    """arena-bench with ``answers.jsonl`` aligned to :func:`load_arena_bench`."""
    root = Path(root)
    table = load_arena_bench(root, prices_path)
    qpos = {q: i for i, q in enumerate(table.ids)}
    mpos = {m: j for j, m in enumerate(table.models)}
    answers: list[list[str | None]] = [[None] * len(table.models) for _ in table.prompts]
    for r in _read_jsonl(root / "answers.jsonl"):
        if r["question_id"] in qpos and r["model"] in mpos:
            answers[qpos[r["question_id"]]][mpos[r["model"]]] = r["answer"]
    return AnswerTable(table, answers)


def load_long_format_answers(paths: str | os.PathLike | Sequence[str | os.PathLike],
                             prices: dict[str, ModelPrice] | str | os.PathLike | None = None,
                             name: str = "long", score_range: tuple[float, float] | None = None) -> AnswerTable:
    """The long format with an ``answer`` column (JSONL or CSV rows ``prompt, model, answer, score``).

    Rows are grouped into prompts exactly as :func:`load_long_format` does (``prompt_id`` or the prompt
    text); a row without an ``answer`` still counts as an outcome. Output tokens default to the answer's
    chars/4 when the row gives none.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for p in paths:
        for row in _iter_long_rows(Path(p)):
            row = dict(row)
            if row.get("answer") and _num(row.get("output_tokens")) != _num(row.get("output_tokens")):
                row["output_tokens"] = math.ceil(len(row["answer"]) / CHARS_PER_TOKEN)
            rows.append(row)
    import tempfile

    # Reuse the long-format reader for scores, costs and grouping (one temporary JSONL, no answers).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({k: v for k, v in row.items() if k != "answer"}, ensure_ascii=False) + "\n")
        table = load_long_format(path, prices=prices, name=name, score_range=score_range)
    key_pos: dict[tuple[str, str | None], int] = {}
    for i, (pid, prompt) in enumerate(zip(table.ids, table.prompts)):
        key_pos.setdefault(("id", pid), i)
        key_pos.setdefault(("p", prompt), i)
    mpos = {m: j for j, m in enumerate(table.models)}
    answers: list[list[str | None]] = [[None] * len(table.models) for _ in table.prompts]
    for row in rows:
        if not row.get("answer"):
            continue
        text: str | None = row.get("prompt")
        if text is None and "messages" in row:
            text = "\n".join(str(mm.get("content", "")) for mm in row["messages"])
        pid = str(row.get("prompt_id") or "")
        i = key_pos[("id", pid)] if pid else key_pos[("p", text)]
        answers[i][mpos[str(row["model"])]] = str(row["answer"])
    return AnswerTable(table, answers)


def load_answer_table(path: str | os.PathLike, prices: dict[str, ModelPrice] | str | os.PathLike | None = None
                      ) -> AnswerTable:
    """Outcomes with answers from any supported layout: ``gsm8k_responses.csv`` (or a RouteLLM folder
    holding it), an arena-bench folder (with ``answers.jsonl``), or long-format JSONL/CSV with an
    ``answer`` column."""
    path = Path(path)
    if path.is_dir() and (path / "question.jsonl").exists():
        return load_arena_bench_answers(path)
    if path.name == "gsm8k_responses.csv":
        return load_routellm_gsm8k_answers(path.parent)
    if path.is_dir() and (path / "gsm8k_responses.csv").exists():
        return load_routellm_gsm8k_answers(path)
    if path.suffix.lower() in (".jsonl", ".csv", ".json", ".ndjson", ".tsv"):
        return load_long_format_answers(path, prices=prices, name=path.stem)
    raise ValueError(f"{path}: no answers in a known layout (gsm8k_responses.csv, an arena-bench folder, or "
                     f"long-format .jsonl/.csv rows with prompt, model, answer, score)")
