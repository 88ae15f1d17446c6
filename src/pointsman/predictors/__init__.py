"""Trainable quality predictors (fit / predict / save / load) and the routing decision helpers.

Every predictor maps (prompt embedding, cheap prompt features) to a predicted score per model plus
an uncertainty; see :mod:`pointsman.predictors.base` for the contract. Artefacts are plain arrays
plus JSON metadata in one ``.npz`` (no pickle); :func:`load_predictor` reads any kind.
"""

from pointsman.predictors.adapted import AdaptedPredictor
from pointsman.predictors.base import QualityPredictor, load_predictor
from pointsman.predictors.decide import (choose_by_floor, choose_by_lambda, decision_confidence,
                                          lambda_grid, sweep)
from pointsman.predictors.ensemble import EnsemblePredictor
from pointsman.predictors.knn import KNNPredictor
from pointsman.predictors.linear import LinearPredictor
from pointsman.predictors.mf import MFPredictor
from pointsman.predictors.transfer import TransferPredictor

__all__ = ["QualityPredictor", "load_predictor", "AdaptedPredictor", "EnsemblePredictor", "KNNPredictor", "LinearPredictor", "MFPredictor",
           "TransferPredictor", "choose_by_lambda", "choose_by_floor", "decision_confidence", "lambda_grid", "sweep"]
