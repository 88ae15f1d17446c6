"""Training, routing offline and calibrating the knob: what `pointsman train|route|calibrate` run.

Data comes in any layout `pointsman.evaluation.datasets` reads: the documented long format (JSONL or
CSV of prompt, model, score[, input_tokens, output_tokens, cost]), RouteLLM's wide CSVs (a `mmlu/`
folder or `gsm8k_responses.csv`), or an arena-bench folder. Several sources are stacked into one table
(scores normalised to 0..1 first, so a 1-10 judge and 0/1 correctness can be mixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.evaluation.datasets import (
    ModelPrice,
    OutcomeTable,
    embed_prompts,
    load_alpacaeval,
    load_arena_bench,
    load_long_format,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    read_prices_csv,
)

PREDICTORS = ("knn", "linear", "mlp", "mf", "transfer")


def load_table(path: str | Path, prices: dict[str, ModelPrice] | None = None) -> OutcomeTable:
    path = Path(path)
    if path.is_dir() and (path / "question.jsonl").exists():
        return load_arena_bench(path)
    if path.is_dir() and (path / "instructions.jsonl").exists() and (path / "outcomes.jsonl").exists():
        return load_alpacaeval(path)
    if path.is_dir() and path.name == "mmlu":
        return load_routellm_mmlu(path.parent)
    if path.is_dir() and (path / "mmlu").is_dir():
        return load_routellm_mmlu(path)
    if path.name == "gsm8k_responses.csv":
        return load_routellm_gsm8k(path.parent)
    if path.suffix in (".jsonl", ".csv", ".json"):
        return load_long_format(path, prices=prices, name=path.stem)
    raise ValueError(f"{path}: not a known data layout (long-format .jsonl/.csv, a RouteLLM mmlu/ folder or "
                     f"gsm8k_responses.csv, or an arena-bench folder)")


def stack(tables: list[OutcomeTable]) -> OutcomeTable:
    """Rows of every table, models united (NaN where a model has no outcome), scores on 0..1."""
    if len(tables) == 1:
        return tables[0]
    models: list[str] = []
    for table in tables:
        models += [m for m in table.models if m not in models]
    n = sum(len(t) for t in tables)
    scores = np.full((n, len(models)), np.nan)
    cost = np.full((n, len(models)), np.nan)
    row = 0
    for table in tables:
        cols = [models.index(m) for m in table.models]
        scores[row:row + len(table), cols] = table.normalised_scores()
        cost[row:row + len(table), cols] = table.cost
        row += len(table)
    prices: dict[str, ModelPrice] = {}
    for table in tables:
        prices.update(table.prices)
    first = tables[0]
    label_kinds: dict[str, str] = {}
    pairs: dict[str, tuple[str, str]] = {}
    for table in tables:
        for source in set(table.source_of_rows()):
            label_kinds[source] = table.label_kind(source)
            strong, weak = table.pair_of(source)
            if strong and weak:
                pairs[source] = (strong, weak)
    references = [t.reference_tokens if t.reference_tokens is not None else np.full(len(t), np.nan) for t in tables]
    return OutcomeTable(name="+".join(t.name for t in tables), prompts=[p for t in tables for p in t.prompts],
                        models=models, scores=scores, cost=cost,
                        input_tokens=np.concatenate([t.input_tokens for t in tables]), prices=prices,
                        output_tokens=_stack_outputs(tables, models),
                        score_range=(0.0, 1.0), strong=first.strong, weak=first.weak,
                        notes=[note for t in tables for note in t.notes],
                        sources=[s for t in tables for s in t.source_of_rows()], label_kinds=label_kinds, pairs=pairs,
                        reference_tokens=np.concatenate(references))


def _stack_outputs(tables: list[OutcomeTable], models: list[str]) -> np.ndarray:
    out = np.full((sum(len(t) for t in tables), len(models)), np.nan)
    row = 0
    for table in tables:
        if table.output_tokens is not None:
            out[row:row + len(table), [models.index(m) for m in table.models]] = table.output_tokens
        row += len(table)
    return out


@dataclass
class TrainingData:
    table: OutcomeTable  # every source stacked
    embeddings: np.ndarray
    features: np.ndarray
    max_seq_length: int = 256  # the encoder window the embeddings were made with
    encoder: str = ""  # the encoder's model id


def rename_models(table: OutcomeTable, aliases: dict[str, str]) -> OutcomeTable:
    """The same table with models renamed (one model called differently in two data sets)."""
    if not aliases or not set(aliases) & set(table.models):
        return table
    models = [aliases.get(m, m) for m in table.models]
    if len(set(models)) != len(models):
        raise ValueError(f"{table.name}: --alias would give two of its models the same name")
    from dataclasses import replace

    return replace(table, models=models, prices={aliases.get(k, k): v for k, v in table.prices.items()},
                   strong=aliases.get(table.strong or "", table.strong), weak=aliases.get(table.weak or "", table.weak),
                   pairs={s: (aliases.get(a, a), aliases.get(b, b)) for s, (a, b) in table.pairs.items()})


def load_data(paths: list[str], prices_path: str | None = None, progress: bool = False,
              max_seq_length: int | None = None, encoder: str = "static",
              aliases: dict[str, str] | None = None) -> TrainingData:
    """Read and embed each source (embeddings are cached per source, so stacking costs no re-embedding).

    ``encoder``: ``static`` (the distilled token table tier 2 routes with by default; reads 512 tokens)
    or ``minilm`` (the transformer; reads :data:`pointsman.embed.encoder.ROUTING_MAX_TOKENS` tokens,
    about 20 ms per decision instead of 0.1 ms). ``max_seq_length`` overrides the encoder's window,
    i.e. how many tokens of each prompt the router reads; the gateway reads the same (it is recorded).
    """
    from pointsman.embed.registry import default_window, make_encoder

    window = int(max_seq_length or default_window(encoder))
    prices = read_prices_csv(prices_path) if prices_path else None
    tables = [rename_models(load_table(p, prices), aliases or {}) for p in paths]
    embedder = make_encoder(encoder, max_seq_length=window)
    embedded = [embed_prompts(t.prompts, encoder=embedder, progress=progress) for t in tables]
    return TrainingData(stack(tables), np.concatenate([e for e, _ in embedded]), np.concatenate([f for _, f in embedded]),
                        max_seq_length=window, encoder=embedder.model_id)


def make_predictor(kind: str, n_train: int = 0) -> Any:
    from pointsman.predictors import KNNPredictor, LinearPredictor, MFPredictor

    if kind not in PREDICTORS:
        raise ValueError(f"unknown predictor {kind!r}; choose one of {', '.join(PREDICTORS)}")
    if kind == "mlp":  # the configuration bench/router evaluates (evaluation/report.py candidates)
        return LinearPredictor("mlp", hidden=128, epochs=20 if n_train > 5000 else 40, weight_decay=1e-3,
                               dropout=0.2, n_members=3)
    if kind == "transfer":
        from pointsman.predictors.transfer import TransferPredictor

        return TransferPredictor()
    return {"knn": KNNPredictor, "linear": LinearPredictor, "mf": MFPredictor}[kind]()


def train(data: TrainingData, kind: str, anchors: dict[str, float], models: list[str] | None = None) -> Any:
    """A router of ``kind`` on ``data``; ``models``: predict only these (the others still shape the labels
    of a transfer router, and are dropped before training any other kind)."""
    table = data.table
    if len(models or table.models) < 2:
        raise ValueError(f"{table.name}: outcomes of {len(models or table.models)} model(s) "
                         f"({', '.join(models or table.models)}); a router chooses between two or more, so it needs "
                         "outcomes of each on the same prompts")
    unknown_models = sorted(set(models or ()) - set(table.models))
    if unknown_models:
        raise ValueError(f"--models names models the data does not have: {unknown_models}")
    predictor = make_predictor(kind, len(table))
    if kind == "transfer":
        from pointsman.evaluation.labels import gain_labels

        labels = gain_labels(table)
        gain = np.where(labels.absolute(), labels.gain, np.nan)
        kept = table.select_models(models) if models else table
        predictor.fit(data.embeddings, data.features, kept.normalised_scores(), model_names=kept.models,
                      score_range=(0.0, 1.0), gain=gain, sources=labels.sources)
        predictor.info["label_sources"] = labels.source_stats
        table = kept
    else:
        if models:
            table = table.select_models(models)
            rows = ~np.isnan(table.scores).all(axis=1)
            table, data = table.subset(rows), TrainingData(table.subset(rows), data.embeddings[rows], data.features[rows],
                                                           data.max_seq_length, data.encoder)
        predictor.fit(data.embeddings, data.features, table.scores, model_names=table.models, score_range=table.score_range)
    unknown = sorted(set(anchors) - set(table.models))
    if unknown:
        raise ValueError(f"--anchor names models the data does not have: {unknown}")
    from pointsman.learning.drift import reference_of

    predictor.reference = reference_of(data.embeddings, data.features)  # what `pointsman drift` compares traffic with
    predictor.info.update({
        "trained_on": table.name, "prompts": len(table),
        # the gateway embeds with the same window (routing/semantic.py reads it)
        "max_seq_length": int(data.max_seq_length), "encoder": data.encoder,
        "anchor_quality": anchors,
        "prices": {m: [p.input_per_mtok, p.output_per_mtok] for m, p in table.prices.items()},
        "mean_output_tokens": _mean_output_tokens(table),
        "encoder_file_sha256": _encoder_file_sha256(),
    })
    return predictor


def _encoder_file_sha256() -> str | None:
    """The digest of the MiniLM file the embeddings (and the static table) were derived from."""
    from pointsman.embed.encoder import file_sha256, find_model_files

    try:
        return file_sha256(find_model_files()[0])
    except (FileNotFoundError, ValueError):
        return None


def _mean_output_tokens(table: OutcomeTable) -> dict[str, float]:
    """Each model's mean answer length, every source weighted the same (a source of one-letter answers
    does not stand for the rest)."""
    if table.output_tokens is None:
        return {}
    names = np.array(table.source_of_rows())
    out = {}
    for j, model in enumerate(table.models):
        means = [float(np.nanmean(table.output_tokens[names == s, j])) for s in dict.fromkeys(names.tolist())
                 if not np.isnan(table.output_tokens[names == s, j]).all()]
        if means:
            out[model] = float(np.mean(means))
    return out


@dataclass
class KnobPoint:
    lambda_: float
    mean_quality: float  # realised, normalised 0..1, on the calibration prompts
    lower_bound: float  # one-sided lower confidence bound of mean_quality
    cost_share: float  # cost relative to always using the most expensive model
    top_share: float  # share of prompts sent to the most expensive model


def require_costs(table: OutcomeTable) -> None:
    """Routing trades quality against cost, so `calibrate` and `eval` need a cost for every model on every prompt
    they score: name the models without one and where costs come from (else NaN means and `no points`)."""
    cost = table.cost[table.complete_rows()]
    unpriced = [m for j, m in enumerate(table.models) if np.isnan(cost[:, j]).any()]
    if unpriced:
        raise ValueError(f"no cost for {', '.join(unpriced)} on some prompts: give costs in the data (a cost column) "
                         "or prices with --prices (a CSV: model,input_usd_per_mtok,output_usd_per_mtok)")


def knob_curve(data: TrainingData, predictor: Any, confidence: float = 0.95) -> list[KnobPoint]:
    """Realised quality and cost of the lambda rule over a grid, on prompts with every model's outcome."""
    from pointsman.predictors.decide import sweep

    rows_kept = data.table.complete_rows()
    complete = data.table.subset(rows_kept)
    if len(complete) == 0:
        raise ValueError("calibration needs prompts with an outcome for every model")
    missing = [m for m in complete.models if m not in predictor.model_names]
    if missing:
        raise ValueError(f"the router was not trained on {missing}; calibrate on data of its own models")
    X, F = data.embeddings[rows_kept], data.features[rows_kept]
    columns = [predictor.model_names.index(m) for m in complete.models]
    low, high = predictor.score_range
    predicted = (predictor.predict(X, F)[:, columns] - low) / ((high - low) or 1.0)
    realised = complete.normalised_scores()
    require_costs(complete)
    cost = complete.cost
    mean_cost = cost.mean(axis=0)
    relative = mean_cost / mean_cost.max()
    top = int(np.argmax(mean_cost))
    rows = np.arange(len(complete))
    binary = bool(np.isin(realised, (0.0, 1.0)).all())
    points = []
    for lam, choice in sweep(predicted, relative):
        got = realised[rows, choice]
        points.append(KnobPoint(lam, float(got.mean()), lower_bound(got, confidence, binary),
                                float(cost[rows, choice].sum() / cost[:, top].sum()), float(np.mean(choice == top))))
    return points


def lower_bound(scores: np.ndarray, confidence: float, binary: bool) -> float:
    """A one-sided lower confidence bound on the mean of scores in 0..1 that stays honest when every score is the
    same (where mean - z sd / sqrt(n) collapses onto the mean): Clopper-Pearson's exact bound for 0/1 outcomes,
    Wilson's score bound, with the mean as the proportion, for graded ones."""
    from statistics import NormalDist

    n = len(scores)
    if n == 0:
        return 0.0
    mean = float(np.mean(scores))
    if binary:
        k = int(round(mean * n))
        if k == 0:
            return 0.0
        if k == n:
            return float((1 - confidence) ** (1 / n))  # the exact bound in closed form
        from scipy.stats import beta

        return float(beta.ppf(1 - confidence, k, n - k + 1))
    z = NormalDist().inv_cdf(confidence)
    centre = mean + z * z / (2 * n)
    margin = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def pick_for_share(points: list[KnobPoint], share: float) -> KnobPoint:
    """The smallest lambda (best quality) whose share of top-model calls is at most `share`."""
    fitting = [p for p in points if p.top_share <= share + 1e-9]
    return min(fitting, key=lambda p: p.lambda_) if fitting else max(points, key=lambda p: p.lambda_)


def pick_for_floor(points: list[KnobPoint], floor: float) -> KnobPoint | None:
    """The cheapest point whose quality's lower confidence bound still clears `floor`."""
    fitting = [p for p in points if p.lower_bound >= floor]
    return min(fitting, key=lambda p: p.cost_share) if fitting else None
