"""Harmonised routing labels: "how much does a stronger model help on this prompt", per source.

Sources mean different things by a score: 0/1 correctness (RouteLLM's MMLU, GSM8K), an absolute 1-10
grade by a judge (arena-bench), or a judge's preference against one reference answer (AlpacaEval), which
rewards long answers on open-ended prompts whatever their substance. Training a router on the raw
scores teaches it each judge's taste; what transfers to a new user's traffic is where a stronger model
makes a difference. So every source is reduced to the same quantity:

* ``preference`` labels are first length-controlled, after AlpacaEval's own length-controlled win
  rate: per source, logit(win) = model effect + gamma * log(answer length / reference length) is fitted
  by least squares, and gamma's share is removed from every label.
* the prompt's **discrimination**: the least-squares slope of its (normalised) scores on the models'
  abilities (each model's mean score in that source). For two models it is their score gap divided by
  their ability gap; with 14 or 49 models every model's answer counts.
* ``gain``: the discrimination times the ability gap of the source's reference pair (its ``strong`` and
  ``weak`` models, else its best and worst): the expected score gap of that pair on the prompt, as a
  share of the score scale. Absolute labels (correctness, judge scores) keep their levels this way, so
  a source where the stronger model helps more (GSM8K's math over MMLU's recall) says so.
* ``z``: the discrimination standardised within its source (mean 0, sd 1), for comparisons that must
  not depend on a source's scale or base rate.

``preference`` labels are relative to a reference answer, so their level means "how far from the
reference", not "how much a stronger model helps"; :func:`gain_labels` reports them, and the transfer
router (predictors/transfer.py) learns its levels only from absolute labels (``ABSOLUTE_KINDS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointsman.evaluation.datasets import OutcomeTable

__all__ = ["GainLabels", "gain_labels", "length_controlled", "ABSOLUTE_KINDS"]

ABSOLUTE_KINDS = ("correctness", "judge_score")

_EPS = 0.01


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def length_controlled(scores: np.ndarray, output_tokens: np.ndarray | None, reference_tokens: np.ndarray | None
                      ) -> tuple[np.ndarray, float]:
    """(scores with the judge's length preference removed, gamma). ``scores`` (n, m) preferences in 0..1."""
    if output_tokens is None or reference_tokens is None:
        return scores, 0.0
    ratio = np.log(np.maximum(output_tokens, 1.0) / np.maximum(reference_tokens, 1.0)[:, None])
    ok = ~np.isnan(scores) & ~np.isnan(ratio) & (np.nanstd(scores, axis=0) > 0)[None, :]
    if ok.sum() < 10:
        return scores, 0.0
    y = _logit(scores)
    # model effects out (within-model centring), then one pooled slope on the length ratio
    y_c = np.where(ok, y - np.nanmean(np.where(ok, y, np.nan), axis=0), 0.0)
    r_c = np.where(ok, ratio - np.nanmean(np.where(ok, ratio, np.nan), axis=0), 0.0)
    gamma = float((y_c * r_c).sum() / max(float((r_c * r_c).sum()), 1e-12))
    adjusted = 1.0 / (1.0 + np.exp(-(y - gamma * np.where(np.isnan(ratio), 0.0, ratio))))
    return np.where(ok, adjusted, scores), gamma


@dataclass
class GainLabels:
    """Per prompt: ``discrimination`` (score units per unit of ability), ``z`` (standardised within its
    source; NaN where fewer than two models have a score) and the per-source statistics."""

    discrimination: np.ndarray
    gain: np.ndarray
    z: np.ndarray
    sources: list[str]
    source_stats: dict[str, dict[str, float | str]]  # per source: mean, sd, models, length_gamma, label_kind

    def absolute(self) -> np.ndarray:
        """(n,) bool: rows whose source's labels are absolute (correctness or a judge's grade)."""
        kinds = {s: v["label_kind"] for s, v in self.source_stats.items()}
        return np.array([kinds[s] in ABSOLUTE_KINDS for s in self.sources]) & ~np.isnan(self.gain)


def gain_labels(table: OutcomeTable, exclude_models: tuple[str, ...] = ()) -> GainLabels:
    """Harmonised labels of every row (see the module docstring)."""
    scores = table.normalised_scores().astype(np.float64)
    sources = table.source_of_rows()
    names = np.array(sources)
    discrimination = np.full(len(table), np.nan)
    gain = np.full(len(table), np.nan)
    z = np.full(len(table), np.nan)
    stats: dict[str, dict[str, float | str]] = {}
    keep = np.array([m not in exclude_models for m in table.models])
    for source in dict.fromkeys(sources):
        rows = np.flatnonzero(names == source)
        block = scores[rows][:, keep]
        cols = np.asarray(~np.isnan(block).all(axis=0))  # (the stubs allow a scalar)
        block = block[:, cols]
        kept_names = [m for m, k in zip(table.models, keep) if k]
        kept_names = [m for m, c in zip(kept_names, cols) if c]
        kind = table.label_kind(source)
        gamma = 0.0
        if kind == "preference":
            # a model that is the reference itself (a constant 0.5) carries no information
            informative = np.nanstd(block, axis=0) > 1e-9
            block = block[:, informative]
            kept_names = [m for m, k in zip(kept_names, informative) if k]
            outputs = None if table.output_tokens is None else table.output_tokens[rows][:, keep][:, cols][:, informative]
            reference = None if table.reference_tokens is None else table.reference_tokens[rows]
            block, gamma = length_controlled(block, outputs, reference)
        ability = np.nanmean(block, axis=0)
        have = ~np.isnan(block)
        a = np.where(have, ability[None, :], np.nan)
        a_c = a - np.nanmean(a, axis=1, keepdims=True)
        s_c = block - np.nanmean(np.where(have, block, np.nan), axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.nansum(a_c * s_c, axis=1) / np.nansum(a_c * a_c, axis=1)
        slope[have.sum(axis=1) < 2] = np.nan
        mean, sd = float(np.nanmean(slope)), float(np.nanstd(slope))
        pair = [kept_names.index(m) for m in table.pair_of(source) if m in kept_names]
        gap = float(ability[pair[0]] - ability[pair[1]]) if len(pair) == 2 else float(np.nanmax(ability) - np.nanmin(ability))
        discrimination[rows] = slope
        gain[rows] = slope * gap
        z[rows] = (slope - mean) / (sd if sd > 0 else 1.0)
        stats[source] = {"mean": mean, "sd": sd, "models": int(block.shape[1]), "length_gamma": gamma,
                         "pair_gap": gap, "mean_gain": float(np.nanmean(slope * gap)),
                         "label_kind": kind}
    return GainLabels(discrimination, gain, z, sources, stats)

