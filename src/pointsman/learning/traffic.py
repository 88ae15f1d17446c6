"""Live traffic as training and evaluation data: outcome rows out of the ledger, embedded as a router reads them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.learning.store import OutcomeRow, outcome_store_from_url

__all__ = ["embed_traffic", "read_outcomes", "write_outcomes"]


def embed_traffic(texts: Sequence[str], info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, raw prompt features) of ``texts`` by the encoder and window a router artefact records
    (its ``info``). Nothing is cached on disk: these are users' prompts."""
    from pointsman.embed.features import FEATURE_NAMES, prompt_features
    from pointsman.embed.registry import default_window, encoder_kind, make_encoder

    kind = encoder_kind(info.get("encoder"))
    window = int(info.get("max_seq_length") or default_window(kind))
    encoder = make_encoder(kind, max_seq_length=window)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    ids, n_tokens = encoder.tokenize(list(texts))
    return encoder.encode_ids(ids), prompt_features(list(texts), n_tokens, window)


def read_outcomes(ledger_url: str, since: float = 0.0, until: float | None = None) -> list[OutcomeRow]:
    """Feedback and shadow outcomes of requests whose routing text was stored (``learning.store_prompts``)."""
    store = outcome_store_from_url(ledger_url)
    try:
        return store.outcomes(since, until)
    finally:
        store.close()


def write_outcomes(rows: Sequence[OutcomeRow], path: str | Path) -> None:
    """The rows in the long format `pointsman train` reads (JSONL)."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.long_format(), ensure_ascii=False) + "\n")
