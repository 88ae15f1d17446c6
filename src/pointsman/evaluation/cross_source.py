"""`pointsman eval --cross-source`: train on every source but one, test on the one left out.

A user's traffic is a source no router was trained on, so the honest test of a router is on a source
it has never seen. For each source the report gives the two-model APGR of its strong/weak pair, for:

* ``random`` (0.5 by construction), ``length`` (longer prompts to the strong model first) and
  ``task-type`` (a fixed order of task types, no training: code and math first, then extraction and
  reasoning, then the rest);
* ``knn``: a kNN-40 on the same harmonised labels (the usual embedding router, for contrast);
* ``transfer``: the transfer router (predictors/transfer.py): task-type cues and prompt shape, with a
  local correction gated by closeness to the training prompts; what the shipped default router is;
* optionally any trained router file given (``extra``), e.g. the shipped default: if it was trained on
  the held-out source the row says so.

Plus, per source, the transfer router in distribution (5 folds: the other sources and four fifths of
this one train, the fifth tests), and reliability of its decision confidence out of distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointsman.evaluation.datasets import OutcomeTable
from pointsman.evaluation.labels import gain_labels, length_controlled
from pointsman.evaluation.metrics import oracle_two_model_curve, two_model_curve
from pointsman.embed.features import FEATURE_NAMES, TASK_TYPES

__all__ = ["SourceData", "cross_source", "tables_markdown", "task_type_score", "train_transfer", "load_sources",
           "expand_sources", "router_scorer"]

# the fixed order of the task-type baseline (higher first): no training, the common-sense prior
TASK_TYPE_ORDER = {"code": 2.0, "math": 2.0, "extraction": 1.0, "reasoning": 1.0}


@dataclass
class SourceData:
    table: OutcomeTable
    embeddings: np.ndarray
    features: np.ndarray


def expand_sources(paths: list[str]) -> list[str]:
    """A data root like ../shared/data stands for its routing sources; anything else is one source."""
    from pathlib import Path

    out: list[str] = []
    for path in paths:
        root = Path(path)
        known = [root / "routellm" / "mmlu", root / "routellm" / "gsm8k_responses.csv", root / "arena-bench",
                 root / "alpacaeval"]
        found = [str(p) for p in known if p.exists()]
        out += found if root.is_dir() and found else [path]
    return out


def load_sources(paths: list[str], encoder: str = "static", progress: bool = False) -> list[SourceData]:
    """Each path read and embedded on its own: one source each."""
    from pointsman.embed.registry import make_encoder
    from pointsman.evaluation.datasets import embed_prompts
    from pointsman.training import load_table

    embedder = make_encoder(encoder)
    sources = []
    for path in expand_sources(paths):
        table = load_table(path)
        if table.strong is None or table.weak is None:  # a user's data: its best and its worst model on average
            means = np.nanmean(table.normalised_scores(), axis=0)
            table.strong, table.weak = table.models[int(np.nanargmax(means))], table.models[int(np.nanargmin(means))]
        emb, feats = embed_prompts(table.prompts, encoder=embedder, progress=progress)
        sources.append(SourceData(table, emb, feats))
    return sources


def router_scorer(path: Any) -> Callable[[SourceData], tuple[np.ndarray, bool]]:
    """A trained router file as an extra row: its predicted quality gap of its strongest vs weakest anchor."""
    from pointsman.predictors import load_predictor
    from pointsman.routing.semantic import router_file

    predictor = load_predictor(router_file(path))
    anchors: dict[str, float] = predictor.info.get("anchor_quality") or {}
    ranked = sorted(anchors, key=lambda name: anchors[name]) if len(anchors) >= 2 else list(predictor.model_names)
    weak, strong = predictor.model_names.index(ranked[0]), predictor.model_names.index(ranked[-1])
    trained = set(str(predictor.info.get("trained_on", "")).split("+"))

    def score(test: SourceData) -> tuple[np.ndarray, bool]:
        quality = predictor.predict(test.embeddings, test.features)
        return quality[:, strong] - quality[:, weak], test.table.name in trained

    return score


def task_type_score(features: np.ndarray) -> np.ndarray:
    """The untrained baseline: the task-type cue features weighted by :data:`TASK_TYPE_ORDER`."""
    start = FEATURE_NAMES.index("task_" + TASK_TYPES[0])
    order = np.array([TASK_TYPE_ORDER.get(t, 0.0) for t in TASK_TYPES])
    return features[:, start:start + len(TASK_TYPES)] @ order


def _stack(parts: list[SourceData]) -> SourceData:
    from pointsman.training import stack

    if len(parts) == 1:
        return parts[0]
    return SourceData(stack([p.table for p in parts]), np.concatenate([p.embeddings for p in parts]),
                      np.concatenate([p.features for p in parts]))


def train_transfer(data: SourceData, **params: Any) -> Any:
    """The transfer router on these sources' harmonised labels (absolute-label sources only)."""
    from pointsman.predictors.transfer import TransferPredictor

    labels = gain_labels(data.table)
    gain = np.where(labels.absolute(), labels.gain, np.nan)
    return TransferPredictor(**params).fit(data.embeddings, data.features, data.table.normalised_scores(),
                                           model_names=data.table.models, score_range=(0.0, 1.0), gain=gain,
                                           sources=labels.sources)


def _knn_z(train: SourceData, test: SourceData) -> np.ndarray:
    from pointsman.predictors import KNNPredictor

    z = gain_labels(train.table).z
    ok = ~np.isnan(z)
    knn = KNNPredictor(k=40).fit(train.embeddings[ok], None, z[ok, None], score_range=(-4.0, 4.0))
    return knn.predict(test.embeddings)[:, 0]


def _pair(table: OutcomeTable, length_control: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows with both, weak scores, strong scores) normalised, optionally length-controlled preferences."""
    s, w = table.pair_index()
    scores = table.normalised_scores()
    if length_control and table.label_kind(table.source_of_rows()[0]) == "preference":
        adjusted, _ = length_controlled(scores[:, [w]], None if table.output_tokens is None else table.output_tokens[:, [w]],
                                        table.reference_tokens)
        scores = scores.copy()
        scores[:, w] = adjusted[:, 0]
    rows = ~np.isnan(scores[:, s]) & ~np.isnan(scores[:, w])
    return rows, scores[rows, w], scores[rows, s]


def _apgr(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float:
    return round(two_model_curve(score, weak, strong).apgr(), 4)


def reliability(confidence: np.ndarray, chose_strong: np.ndarray, realised: np.ndarray, threshold: float,
                bins: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> list[dict[str, float | str]]:
    """Per confidence bin: decisions, mean confidence, share right (the chosen model was the better pick for
    that prompt: the strong one exactly when its realised gain beat the threshold; ties count half) and the
    mean realised advantage of the choice over the alternative, in score units."""
    sign = np.where(chose_strong, 1.0, -1.0)
    margin = (realised - threshold) * sign
    right = np.where(margin > 0, 1.0, np.where(margin == 0, 0.5, 0.0))
    out: list[dict[str, float | str]] = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        inside = (confidence >= lo) & ((confidence < hi) if hi < 1.0 else (confidence <= hi))
        if inside.any():
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(inside.sum()),
                        "confidence": round(float(confidence[inside].mean()), 3),
                        "right": round(float(right[inside].mean()), 3),
                        "advantage": round(float(margin[inside].mean()), 4)})
    return out


def cross_source(sources: list[SourceData], folds: int = 5,
                 extra: dict[str, Callable[[SourceData], tuple[np.ndarray, bool]]] | None = None,
                 log: Callable[[str], None] = print, **params: Any) -> dict:
    """Leave-one-source-out results (see the module docstring). ``extra[name](test) -> (score, trained_on_it)``."""
    results = []
    for i, test in enumerate(sources):
        table = test.table
        if table.strong is None or table.weak is None:
            log(f"{table.name}: no strong/weak pair, skipped")
            continue
        train = _stack([s for j, s in enumerate(sources) if j != i])
        predictor = train_transfer(train, **params)
        z, sd, gate = predictor.gain(test.embeddings, predictor.scaler.transform(test.features, len(test.features)))
        scores = {
            "random": np.zeros(len(table)),
            "length": test.features[:, 0].astype(np.float64),
            "task-type": task_type_score(test.features),
            "knn (same labels)": _knn_z(train, test),
            "transfer": z,
        }
        trained_on: dict[str, bool] = {}
        for name, fn in (extra or {}).items():
            scores[name], trained_on[name] = fn(test)
        row: dict[str, Any] = {"source": table.name, "prompts": len(table), "strong": table.strong, "weak": table.weak,
                               "label": table.label_kind(table.source_of_rows()[0]),
                               "gate_mean": round(float(gate.mean()), 3), "trained_on": trained_on}
        variants = [("", False)] + ([(" (length-controlled)", True)] if row["label"] == "preference" else [])
        for suffix, lc in variants:
            rows, weak, strong = _pair(table, lc)
            row["apgr" + suffix] = {name: _apgr(score[rows], weak, strong) for name, score in scores.items()}
            row["apgr" + suffix]["oracle"] = round(oracle_two_model_curve(weak, strong).apgr(), 4)
        # reliability of the transfer router's confidence: send the half with the larger predicted gain to the
        # strong model; confidence = P(the expected gain is on the chosen side), as the semantic tier computes it
        rows, weak, strong = _pair(table, True)
        threshold = float(np.median(z[rows]))
        chose_strong = z[rows] > threshold
        confidence = 0.5 * (1 + np.vectorize(math.erf)(np.abs(z[rows] - threshold) / (sd[rows] * math.sqrt(2)) ))
        row["reliability"] = reliability(confidence, chose_strong, strong - weak, threshold)
        row["confidence_mean"] = round(float(confidence.mean()), 3)
        if folds > 1:
            row["transfer in distribution"] = _in_distribution(sources, i, folds, **params)
        log(f"{table.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["apgr"].items()))
        results.append(row)
    return {"sources": results, "params": params}


def _in_distribution(sources: list[SourceData], i: int, folds: int, **params: Any) -> float:
    test = sources[i]
    n = len(test.table)
    order = np.random.default_rng(0).permutation(n)
    z = np.zeros(n)
    for f in range(folds):
        held = np.sort(order[f::folds])
        kept = np.setdiff1d(np.arange(n), held)
        own = SourceData(test.table.subset(kept), test.embeddings[kept], test.features[kept])
        train = _stack([s for j, s in enumerate(sources) if j != i] + [own])
        predictor = train_transfer(train, **params)
        z[held] = predictor.gain(test.embeddings[held],
                                           predictor.scaler.transform(test.features[held], len(held)))[0]
    rows, weak, strong = _pair(test.table, False)
    return _apgr(z[rows], weak, strong)


def tables_markdown(result: dict) -> str:
    lines = ["| held-out source | label | " + " | ".join(result["sources"][0]["apgr"]) + " | transfer, in distribution |",
             "|---|---|" + "---|" * (len(result["sources"][0]["apgr"]) + 1)]
    for row in result["sources"]:
        for key in [k for k in row if k.startswith("apgr")]:
            cells = []
            for name, value in row[key].items():
                mark = " (trained on it)" if row["trained_on"].get(name) else ""
                cells.append(f"{value:.3f}{mark}")
            name = row["source"] + key[4:]
            lines.append(f"| {name} | {row['label']} | " + " | ".join(cells) + f" | {row.get('transfer in distribution', '')} |")
    lines += ["", "Reliability of the transfer router's confidence on each held-out source. Decision: the half of the "
              "prompts with the larger predicted gain go to the strong model (threshold t = the median prediction); "
              "confidence = P(the prompt's expected gain is on the chosen side of t) from the prediction and its sd; "
              "right = the chosen model was the better pick for that prompt (strong exactly when its realised gain "
              "beat t; ties half); advantage = the choice's mean realised gain over the alternative, minus t.", "",
              "| held-out source | gate (mean) | confidence bin | decisions | mean confidence | share right | advantage |",
              "|---|---|---|---|---|---|---|"]
    for row in result["sources"]:
        for b in row["reliability"]:
            lines.append(f"| {row['source']} | {row['gate_mean']:.2f} | {b['bin']} | {b['n']} | {b['confidence']:.3f} | "
                         f"{b['right']:.3f} | {b['advantage']:+.4f} |")
    return "\n".join(lines) + "\n"
