"""The contract every quality predictor follows, in scikit-learn's habit.

A predictor learns, from labelled prompts, how well each of ``m`` models answers a prompt::

    p = KNNPredictor(k=40).fit(X_emb, features, scores, model_names=[...], score_range=(0, 1))
    q = p.predict(X_emb, features)                        # (n, m) predicted score, score units
    q, sd = p.predict_with_uncertainty(X_emb, features)   # sd: (n, m) std of that prediction
    p.save("router.npz"); p2 = load_predictor("router.npz")   # any kind, no pickle

* ``X_emb``: (n, d) float32 L2-normalised prompt embeddings (``MiniLMEncoder.encode``).
* ``features``: (n, F) cheap prompt features (``pointsman.embed.features``) or ``None``.
* ``scores``: (n, m) float, higher is better, NaN where a model has no label for a prompt.
* Scores are normalised to [0, 1] inside with ``score_range`` (``(0, 1)`` for correctness, ``(1, 10)``
  for a 1-10 judge); predictions come back in the original units.
* ``sd`` is the predictor's own (epistemic) uncertainty about its mean, in score units: ensemble
  spread or neighbour-based posterior width. :mod:`pointsman.predictors.decide` turns it into a
  decision confidence that a deferral tier can threshold.

The saved artefact is one ``.npz`` of plain arrays plus a JSON metadata entry (``__meta__``), read
with ``allow_pickle=False``; inference needs only numpy.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from pointsman.embed.features import FEATURES_VERSION, feature_meta, feature_width

__all__ = ["QualityPredictor", "load_predictor", "register", "ARTIFACT_FORMAT", "FeatureScaler", "write_artefact",
           "read_artefact"]

ARTIFACT_FORMAT = "pointsman.predictor/1"
_REGISTRY: dict[str, type["QualityPredictor"]] = {}


def register(cls):
    _REGISTRY[cls.kind] = cls
    return cls


class FeatureScaler:
    """Standardises cheap prompt features (mean/std learned at fit time)."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = mean
        self.std = std

    def fit(self, F: np.ndarray | None) -> "FeatureScaler":
        if F is None or F.size == 0:
            self.mean = self.std = None
            return self
        self.mean = F.mean(axis=0).astype(np.float32)
        self.std = np.maximum(F.std(axis=0), 1e-6).astype(np.float32)
        return self

    def transform(self, F: np.ndarray | None, n: int) -> np.ndarray:
        if self.mean is None:
            return np.zeros((n, 0), dtype=np.float32)
        if F is None:
            raise ValueError("this predictor was trained with prompt features; pass them")
        F = np.asarray(F, dtype=np.float32)[:, :len(self.mean)]  # an older artefact reads its leading columns
        return np.clip((F - self.mean) / self.std, -6.0, 6.0)

    def arrays(self) -> dict[str, np.ndarray]:
        """The learned state as an artefact stores it (nothing when trained without features)."""
        if self.mean is None or self.std is None:
            return {}
        return {"_feat_mean": self.mean, "_feat_std": self.std}


REFERENCE_PREFIX = "_ref_"  # arrays of QualityPredictor.reference in an artefact


class QualityPredictor(ABC):
    """Base class; subclasses implement ``_fit``, ``_predict`` and the array/param hooks."""

    kind: ClassVar[str] = "base"

    def __init__(self) -> None:
        self.model_names: list[str] = []
        self.score_range: tuple[float, float] = (0.0, 1.0)
        self.scaler = FeatureScaler()
        self.embed_dim: int | None = None
        self.info: dict[str, Any] = {}
        self.reference: dict[str, np.ndarray] = {}  # a summary of the training prompts (learning/drift.py)

    # ---------------------------------------------------------------- public API
    def fit(self, X: np.ndarray, features: np.ndarray | None, scores: np.ndarray,
            model_names: Sequence[str] | None = None, score_range: tuple[float, float] | None = None
            ) -> "QualityPredictor":
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(scores, dtype=np.float64)
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"scores must be (n, m) with n = {X.shape[0]}")
        self.model_names = list(model_names) if model_names is not None else [f"m{j}" for j in range(Y.shape[1])]
        if len(self.model_names) != Y.shape[1]:
            raise ValueError("model_names must match the columns of scores")
        if score_range is None:
            lo, hi = float(np.nanmin(Y)), float(np.nanmax(Y))
            score_range = (0.0, 1.0) if (lo >= 0 and hi <= 1) else (lo, hi)
        self.score_range = (float(score_range[0]), float(score_range[1]))
        self.embed_dim = X.shape[1]
        self.scaler.fit(None if features is None else np.asarray(features, dtype=np.float32))
        Y01 = np.clip((Y - self.score_range[0]) / (self.score_range[1] - self.score_range[0]), 0.0, 1.0)
        self._fit(X, self.scaler.transform(features, len(X)), Y01)
        return self

    def predict(self, X: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        return self.predict_with_uncertainty(X, features)[0]

    def predict_with_uncertainty(self, X: np.ndarray, features: np.ndarray | None = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
        X = np.atleast_2d(np.asarray(X, dtype=np.float32))
        if features is not None:
            features = np.atleast_2d(features)
        mean01, sd01 = self._predict(X, self.scaler.transform(features, len(X)))
        lo, hi = self.score_range
        return lo + (hi - lo) * mean01, (hi - lo) * sd01

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        meta = {
            "format": ARTIFACT_FORMAT,
            "kind": self.kind,
            "params": self._params(),
            "model_names": self.model_names,
            "score_range": list(self.score_range),
            "embed_dim": self.embed_dim,
            **dict(zip(("feature_names", "features_version"),
                       feature_meta(len(self.scaler.mean)) if self.scaler.mean is not None else ([], FEATURES_VERSION))),
            "info": self.info,
        }
        arrays = dict(self._arrays())
        arrays.update(self.scaler.arrays())
        arrays.update({REFERENCE_PREFIX + name: value for name, value in self.reference.items()})
        write_artefact(path, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QualityPredictor":
        obj = load_predictor(path)
        if not isinstance(obj, cls):
            raise TypeError(f"{path} holds a {obj.kind} predictor, not {cls.kind}")
        return obj

    @classmethod
    def _from_meta_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "QualityPredictor":
        obj = cls(**meta["params"])
        obj.model_names = list(meta["model_names"])
        obj.score_range = tuple(meta["score_range"])
        obj.embed_dim = meta["embed_dim"]
        obj.info = meta.get("info", {})
        if "_feat_mean" in arrays:
            feature_width(meta["feature_names"], int(meta.get("features_version") or 0))
            obj.scaler = FeatureScaler(arrays["_feat_mean"], arrays["_feat_std"])
        obj.reference = {k[len(REFERENCE_PREFIX):]: v for k, v in arrays.items() if k.startswith(REFERENCE_PREFIX)}
        obj._load_arrays({k: v for k, v in arrays.items() if not k.startswith(REFERENCE_PREFIX)})
        return obj

    # ---------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _fit(self, X: np.ndarray, F: np.ndarray, Y01: np.ndarray) -> None:
        """X (n, d) float32, F (n, f) standardised features (f may be 0), Y01 (n, m) in [0,1] or NaN."""

    @abstractmethod
    def _predict(self, X: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), both (n, m), in [0, 1] units."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """Learned state as plain arrays."""

    @abstractmethod
    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        ...


def write_artefact(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   compress: bool = False) -> None:
    """One ``.npz`` of plain arrays plus the JSON metadata as ``__meta__``, replaced atomically (no pickle)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise TypeError(f"array {k} has dtype object: not allowed in an artefact")
    payload = {**arrays, "__meta__": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        # numpy's stubs type **kwds as if a key could be savez's own allow_pickle (bool)
        (np.savez_compressed if compress else np.savez)(fh, **payload)  # type: ignore[arg-type]
    os.replace(tmp, path)


def read_artefact(path: str | os.PathLike, expected_format: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of an artefact written by `write_artefact`; ValueError if it is another format."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "__meta__" not in arrays:
        raise ValueError(f"{path}: not a pointsman artefact (no metadata)")
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    if meta.get("format") != expected_format:
        raise ValueError(f"{path}: not a {expected_format} artefact")
    return arrays, meta


def load_predictor(path: str | os.PathLike) -> QualityPredictor:
    """Load any registered predictor kind from a ``.npz`` artefact (no pickle)."""
    # make sure the built-in kinds are registered
    from pointsman.predictors import ensemble, knn, linear, mf, transfer  # noqa: F401

    arrays, meta = read_artefact(path, ARTIFACT_FORMAT)
    kind = meta["kind"]
    if kind not in _REGISTRY:
        raise ValueError(f"{path}: unknown predictor kind {kind!r}")
    return _REGISTRY[kind]._from_meta_arrays(meta, arrays)
