"""Average of several predictors (any kinds), saved as one artefact.

The mean is the members' average prediction; the uncertainty combines the members' own
uncertainty with their disagreement: ``sqrt(mean(sd_i^2) + var(mean_i))``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pointsman.predictors.base import QualityPredictor, _REGISTRY, register

__all__ = ["EnsemblePredictor"]


@register
class EnsemblePredictor(QualityPredictor):
    kind = "ensemble"

    def __init__(self, members: Sequence[QualityPredictor] | Sequence[dict] = ()):
        super().__init__()
        # members are predictor instances (fit them through the ensemble) or, when loading, metas
        self.members: list[QualityPredictor] = [m for m in members if isinstance(m, QualityPredictor)]
        self._member_metas = [m for m in members if isinstance(m, dict)]

    def fit(self, X, features, scores, model_names=None, score_range=None):
        super().fit(X, features, scores, model_names, score_range)
        for m in self.members:
            m.fit(X, features, scores, model_names, score_range)
        return self

    def _fit(self, X, F, Y01):  # members are fitted in fit(): they standardise features themselves
        pass

    def predict_with_uncertainty(self, X, features=None):
        if not self.members:
            raise ValueError("empty ensemble")
        outs = [m.predict_with_uncertainty(X, features) for m in self.members]
        means = np.stack([o[0] for o in outs])
        sds = np.stack([o[1] for o in outs])
        sd = np.sqrt((sds ** 2).mean(axis=0) + (means.var(axis=0) if len(outs) > 1 else 0.0))
        return means.mean(axis=0), sd

    def _predict(self, X, F):  # pragma: no cover - predict_with_uncertainty is overridden
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {"members": [{"kind": m.kind, "params": m._params(), "model_names": m.model_names,
                             "score_range": list(m.score_range), "embed_dim": m.embed_dim, "info": m.info,
                             "has_features": m.scaler.mean is not None}
                            for m in self.members]}

    def _arrays(self):
        out = {}
        for i, m in enumerate(self.members):
            for k, v in m._arrays().items():
                out[f"m{i}.{k}"] = v
            for k, v in m.scaler.arrays().items():
                out[f"m{i}.{k}"] = v
        return out

    def _load_arrays(self, arrays):
        from pointsman.embed.features import feature_meta

        members = []
        for i, meta in enumerate(self._member_metas):
            pre = f"m{i}."
            sub = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
            mm = {"params": meta["params"], "model_names": meta["model_names"], "score_range": meta["score_range"],
                  "embed_dim": meta["embed_dim"], "info": meta.get("info", {}),
                  **dict(zip(("feature_names", "features_version"),
                             feature_meta(len(sub["_feat_mean"])) if "_feat_mean" in sub else ([], 0)))}
            members.append(_REGISTRY[meta["kind"]]._from_meta_arrays(mm, sub))
        self.members = members
        self._member_metas = []
