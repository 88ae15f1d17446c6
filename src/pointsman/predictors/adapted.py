"""A router adapted to live traffic: a base router plus a correction learned from outcome rows.

Feedback is partial: each row is one (prompt, model, score) observation, usually only for the model the
router chose, sometimes also for a second ("shadow") model. The correction works per model, on the
residual ``score - start(x, model)`` where ``start`` is the base router's prediction (for a model the base
never saw: the base's mean prediction plus a per-model offset and slope fixed when adapting, see
:func:`pointsman.learning.adapt.adapt`):

* a **global part** per model: ``a_m + b_m * z(x)``, where ``z`` is the base's own routing signal (its
  predicted gap between its strongest and weakest model, standardised). Ridge-shrunk towards zero, so a
  model with a few rows keeps the base's view; with more rows it re-levels the model on this traffic
  and re-scales (or reverses) how much the base's difficulty signal matters for it;
* a **local part**: kernel averages of the remaining residuals over feedback rows of similar prompts,
  weights ``exp((cos - 1) / temperature)``, divided by ``weight + shrink`` so that it fades to zero where
  there is no feedback nearby. First one **shared** by every model (from all rows: this neighbourhood is
  harder or easier than the base thought), then one **per model** on what the shared one leaves. The split
  matters: the router sends each model its own kind of prompt, so a model's rows alone would read "hard
  here" as "this model is bad here" and reorder the models on evidence about only one of them; a per-model
  difference is learned only where several models have rows nearby.

Conditioning on the prompt is what makes partial rows usable: the router's choice depends only on the
prompt, so within a neighbourhood the residuals of the chosen model are not biased by the choice.

The uncertainty is the base's where there is no nearby feedback and the local standard error where there
is (weighted by the evidence). Inference is numpy only: one (n, rows) product and a few small ones;
the artefact is one ``.npz`` holding the base's arrays under ``base.`` and its metadata as JSON bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pointsman.embed.features import FEATURES_VERSION, feature_meta
from pointsman.predictors.base import REFERENCE_PREFIX, QualityPredictor, _REGISTRY, register

__all__ = ["AdaptedPredictor"]

_BASE = "base."


def _base_payload(base: QualityPredictor) -> dict[str, np.ndarray]:
    """The base's arrays and metadata (as `QualityPredictor.save` writes them), under the ``base.`` prefix."""
    arrays = dict(base._arrays())
    if base.scaler.mean is not None and base.scaler.std is not None:
        arrays["_feat_mean"], arrays["_feat_std"] = base.scaler.mean, base.scaler.std
    arrays.update({REFERENCE_PREFIX + name: value for name, value in base.reference.items()})
    names, version = feature_meta(len(base.scaler.mean)) if base.scaler.mean is not None else ([], FEATURES_VERSION)
    meta = {"kind": base.kind, "params": base._params(), "model_names": base.model_names,
            "score_range": list(base.score_range), "embed_dim": base.embed_dim, "feature_names": names,
            "features_version": version, "info": base.info}
    out = {_BASE + k: np.asarray(v) for k, v in arrays.items()}
    out[_BASE + "__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return out


def _base_from_payload(arrays: dict[str, np.ndarray]) -> QualityPredictor:
    mine = {k[len(_BASE):]: v for k, v in arrays.items() if k.startswith(_BASE)}
    meta = json.loads(mine.pop("__meta__").tobytes().decode("utf-8"))
    if meta["kind"] not in _REGISTRY:
        raise ValueError(f"adapted router: unknown base kind {meta['kind']!r}")
    return _REGISTRY[meta["kind"]]._from_meta_arrays(meta, mine)


@register
class AdaptedPredictor(QualityPredictor):
    """Base router + per-model correction from feedback rows. Fitted by :func:`pointsman.learning.adapt.adapt`;
    the constructor takes the hyper-parameters only (scikit-learn's habit)."""

    kind = "adapted"

    def __init__(self, temperature: float = 0.05, shrink: float = 30.0, level_shrink: float = 5.0,
                 slope_shrink: float = 100.0, shared_shrink: float = 3.0) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.shrink = float(shrink)
        self.shared_shrink = float(shared_shrink)
        self.level_shrink = float(level_shrink)
        self.slope_shrink = float(slope_shrink)
        self.base: QualityPredictor | None = None
        self._state: dict[str, np.ndarray] = {}
        self._rows32: np.ndarray | None = None
        self._local = np.zeros((0, 0), dtype=np.float32)

    # ------------------------------------------------------------------ the base's view
    def base_view(self, X: np.ndarray, features: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start (n, m) in 0..1 for every model of this router, base sd (n, m) in 0..1, z (n,))."""
        assert self.base is not None
        q, sd = self.base.predict_with_uncertainty(X, features)
        low, high = self.base.score_range
        scale = (high - low) or 1.0
        q01, sd01 = (q - low) / scale, sd / scale
        st = self._state
        hi, lo = int(st["signal_models"][0]), int(st["signal_models"][1])
        z = ((q01[:, hi] - q01[:, lo]) - st["signal_scale"][0]) / st["signal_scale"][1]
        mean = q01.mean(axis=1)
        extra = len(self.model_names) - q01.shape[1]
        if extra:  # models the base never saw: its mean prediction, offset and tilted per model
            new = mean[:, None] + st["new_offset"][None, :] + z[:, None] * st["new_slope"][None, :]
            q01 = np.hstack([q01, np.clip(new, 0.0, 1.0)])
            sd01 = np.hstack([sd01, np.repeat(sd01.max(axis=1, keepdims=True), extra, axis=1)])
        return q01, sd01, z

    # ------------------------------------------------------------------ inference
    def predict_with_uncertainty(self, X: np.ndarray, features: np.ndarray | None = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
        # the base standardises its own features: they go to it untouched
        X = np.atleast_2d(np.asarray(X, dtype=np.float32))
        if features is not None:
            features = np.atleast_2d(np.asarray(features, dtype=np.float32))
        return self._predict(X, features)

    def _predict(self, X: np.ndarray, F: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        start, base_sd, z = self.base_view(X, F)
        st = self._state
        mean = start + st["level"][None, :] + z[:, None] * st["slope"][None, :]
        if self._rows32 is None:  # stored as float16; converted once, not per call
            self._rows32 = np.ascontiguousarray(st["rows"].astype(np.float32))
            self._local = np.hstack([st["shared"][:, None], st["residual"], st["onehot"]]).astype(np.float32)
        if len(self._rows32):
            # one prompt (the gateway's case): plain loops, as a threaded BLAS product waits on busy cores
            similarity = np.einsum("nd,rd->nr", X, self._rows32) if len(X) <= 8 else X @ self._rows32.T
            kernel = np.exp((similarity - 1.0) / self.temperature)  # (n, rows)
            sums = kernel @ self._local  # one product: shared residual, per-model residuals, per-model weight
            m = len(self.model_names)
            shared = sums[:, 0] / (kernel.sum(axis=1) + self.shared_shrink)
            weight = sums[:, 1 + m:]  # (n, m) evidence per model
            local = shared[:, None] + sums[:, 1:1 + m] / (weight + self.shrink)
        else:
            weight = np.zeros_like(mean)
            local = np.zeros_like(mean)
        mean = np.clip(mean + local, 0.0, 1.0)
        evidence = weight / (weight + self.shrink)
        local_var = st["residual_var"][None, :] / (weight + self.shrink)
        sd = np.sqrt((1.0 - evidence) * base_sd ** 2 + evidence * local_var)
        return mean, sd

    # ------------------------------------------------------------------ fitting happens in learning/adapt.py
    def _fit(self, X: np.ndarray, F: np.ndarray, Y01: np.ndarray) -> None:
        raise TypeError("an adapted router is fitted from feedback rows: use pointsman.learning.adapt.adapt")

    def _set_state(self, base: QualityPredictor, model_names: list[str], state: dict[str, np.ndarray]) -> None:
        self.base = base
        self.model_names = list(model_names)
        self.score_range = (0.0, 1.0)
        self.embed_dim = base.embed_dim
        self.info = dict(base.info)
        self.reference = dict(base.reference)  # the training prompts' summary drift reads: the base's
        self._state = state
        self._rows32 = None

    # ------------------------------------------------------------------ persistence
    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "shrink": self.shrink, "level_shrink": self.level_shrink,
                "slope_shrink": self.slope_shrink, "shared_shrink": self.shared_shrink}

    def _arrays(self) -> dict[str, np.ndarray]:
        assert self.base is not None
        return {**self._state, **_base_payload(self.base)}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.base = _base_from_payload(arrays)
        self._state = {k: v for k, v in arrays.items() if not k.startswith(_BASE) and not k.startswith("_feat")}
        self._rows32 = None
