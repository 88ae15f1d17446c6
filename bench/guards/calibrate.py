"""Calibrate the injection detector's second stage (src/pointsman/guards/models/injection-minilm-head.npz).

Reads the head's weights written by finetune.py and the encoder patch it wrote (``INJECTION_PATCH``), and keeps,
from the S-Labs **validation** split (rule matches aside): the decision scores of its benign texts (the
thresholds: ``guards.injection.fpr`` is read on them) and the shipped first stage's scores of its attacks (the
gate: ``guards.injection.second_stage_recall``). Both scores are computed as the gateway computes them (the
served int8 graph). Run it again whenever the first stage is retrained (the gate depends on it; the guard
refuses a second stage calibrated with another first stage).

    .venv/bin/python bench/guards/calibrate.py --weights /tmp/injection-head-weights.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.guards.data import s_labs  # noqa: E402
from bench.guards.train import embed  # noqa: E402
from pointsman.embed.base import Encoder  # noqa: E402
from pointsman.embed.registry import make_encoder  # noqa: E402
from pointsman.guards.detector import InjectionHead  # noqa: E402
from pointsman.guards.rules import match_rule  # noqa: E402
from pointsman.guards.second_stage import DEFAULT_SECOND_STAGE, SecondStage  # noqa: E402

KIND = "minilm-injection"


def second_embeddings(texts: Sequence[str], encoder: Encoder | None = None, batch: int = 64) -> tuple[np.ndarray, str]:
    """The second stage's encoder's embeddings of ``texts``, as the gateway computes them, and its model id
    (``encoder``: another patch's, for run.py's out-of-distribution row)."""
    encoder = (encoder or make_encoder(KIND)).load()
    out = [encoder.encode_with_features(list(texts[i:i + batch]))[0] for i in range(0, len(texts), batch)]
    return np.vstack(out), encoder.model_id


def calibrate(w: np.ndarray, b: float, trained_on: str, head: InjectionHead | None = None,
              encoder: Encoder | None = None) -> SecondStage:
    head = head or InjectionHead.load()
    texts, labels = s_labs("validation")
    keep = np.array([match_rule(t) is None for t in texts])
    benign = [t for t, y, k in zip(texts, labels, keep) if y == 0 and k]
    attacks = [t for t, y, k in zip(texts, labels, keep) if y == 1 and k]
    emb, model_id = second_embeddings(benign, encoder)
    stage = SecondStage(w, b, np.zeros(1), np.zeros(1), {
        "encoder": model_id, "encoder_kind": KIND, "first_stage": head.fingerprint, "trained_on": trained_on,
        "decision": "mean of the two stages' log-odds",
        "calibration": "s-labs validation split (rules excluded): decision scores of the benign texts, "
                       "first-stage scores of the attacks"})
    first = [head.logit(t, e) for t, e in zip(benign, embed(benign))]
    stage.calibration_ = np.sort([stage.score(e, z) for e, z in zip(emb, first)])
    stage.gate_calibration_ = np.sort([head.score(t, e).score for t, e in zip(attacks, embed(attacks))])
    return stage


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", help="the head weights finetune.py wrote (default: the shipped artefact's)")
    parser.add_argument("--out", default=str(DEFAULT_SECOND_STAGE))
    args = parser.parse_args()
    if args.weights:
        with np.load(args.weights) as data:
            w, b, trained_on = data["w"], float(data["b"][0]), str(data["trained_on"])
    else:
        shipped = SecondStage.load()
        w, b, trained_on = shipped.w_, shipped.b_, str(shipped.info["trained_on"])
    stage = calibrate(w, b, trained_on)
    stage.save(args.out)
    print(f"wrote {args.out}: threshold at 1% FPR {stage.threshold_at(0.01):.4f}, gate at 99.5% recall "
          f"{stage.gate_at(0.995):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
