"""Routing on traffic a router was not trained on: harmonised labels, the transfer router, cross-source eval."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pointsman.cli import main
from pointsman.embed.features import FEATURE_NAMES, TASK_TYPES, feature_width, prompt_features, task_cues
from pointsman.evaluation.datasets import OutcomeTable, load_long_format, write_long_format
from pointsman.evaluation.labels import gain_labels, length_controlled
from pointsman.predictors import LinearPredictor, TransferPredictor, load_predictor
from pointsman.training import stack


def _table(name: str, prompts: list[str], scores: np.ndarray, models=("big", "small"), kind="correctness",
           **extra) -> OutcomeTable:
    n, m = scores.shape
    return OutcomeTable(name=name, prompts=prompts, models=list(models), scores=scores, cost=np.full((n, m), np.nan),
                        input_tokens=np.full(n, 10.0), strong=models[0], weak=models[-1], label_kinds={name: kind},
                        **extra)


# ----------------------------------------------------------------------------- labels

def test_two_model_gain_is_the_score_gap_and_z_is_standardised():
    scores = np.array([[1, 0], [1, 1], [0, 0], [1, 0], [0, 1]], dtype=float)
    labels = gain_labels(_table("quiz", [f"q{i}" for i in range(5)], scores))
    assert np.allclose(labels.gain, scores[:, 0] - scores[:, 1])
    assert labels.z.mean() == pytest.approx(0.0, abs=1e-12) and labels.z.std() == pytest.approx(1.0)
    assert labels.absolute().all()


def test_each_stacked_source_keeps_its_own_pair_and_scale():
    quiz = _table("quiz", ["a", "b"], np.array([[1, 0], [1, 1]], dtype=float))
    # a 1-10 judge, three models, the pair under other names
    judge = OutcomeTable(name="judge", prompts=["c", "d"], models=["gpt", "mid", "mix"],
                         scores=np.array([[9, 7, 5], [8, 8, 8]], dtype=float), cost=np.full((2, 3), np.nan),
                         input_tokens=np.full(2, 5.0), score_range=(1.0, 10.0), strong="gpt", weak="mix",
                         label_kinds={"judge": "judge_score"})
    labels = gain_labels(stack([quiz, judge]))
    assert labels.sources == ["quiz", "quiz", "judge", "judge"]
    assert labels.gain[:2] == pytest.approx([1.0, 0.0])
    assert labels.gain[2] == pytest.approx(4 / 9) and labels.gain[3] == pytest.approx(0.0)  # gpt - mix on the 0..1 scale
    assert labels.source_stats["judge"]["label_kind"] == "judge_score"


def test_length_control_removes_a_judge_that_only_likes_long_answers():
    rng = np.random.default_rng(0)
    n, m = 300, 6
    reference = rng.integers(100, 400, n).astype(float)
    output = reference[:, None] * np.exp(rng.normal(0, 0.5, (n, m)))
    win = 1 / (1 + np.exp(-(np.log(output / reference[:, None]) * 2.0 - 1.0)))  # length and nothing else
    adjusted, gamma = length_controlled(win, output, reference)
    assert gamma == pytest.approx(2.0, rel=0.05)
    assert np.std(adjusted) < 0.05 * np.std(win) + 1e-3
    table = _table("pref", [f"p{i}" for i in range(n)], win, models=[f"m{j}" for j in range(m)], kind="preference",
                   output_tokens=output, reference_tokens=reference)
    labels = gain_labels(table)
    assert labels.source_stats["pref"]["length_gamma"] == pytest.approx(2.0, rel=0.05)
    assert not labels.absolute().any()  # a preference against a reference never sets the transfer router's levels


def test_long_format_carries_source_label_kind_and_reference_length(tmp_path):
    rows = [{"prompt": "p1", "model": "a", "score": 1, "source": "quiz", "label_kind": "correctness"},
            {"prompt": "p1", "model": "b", "score": 0, "source": "quiz", "label_kind": "correctness"},
            {"prompt": "p2", "model": "a", "score": 0.7, "source": "chat", "label_kind": "preference",
             "reference_tokens": 120, "output_tokens": 300}]
    path = tmp_path / "o.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    table = load_long_format(path)
    assert table.sources == ["quiz", "chat"] and table.label_kinds == {"quiz": "correctness", "chat": "preference"}
    assert np.isnan(table.reference_tokens[0]) and table.reference_tokens[1] == 120
    out = tmp_path / "again.jsonl"
    write_long_format(table, out)
    again = load_long_format(out)
    assert again.sources == table.sources and again.label_kinds == table.label_kinds
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "model": "a", "score": 1, "label_kind": "vibes"}))
    with pytest.raises(ValueError, match="label_kind"):
        load_long_format(bad)


# ----------------------------------------------------------------------------- features

def test_task_cues_name_the_task_type():
    cues = dict(zip(TASK_TYPES, task_cues("Write a Python function that parses a CSV file.")))
    assert cues["code"] > 0 and cues["writing"] == 0
    assert dict(zip(TASK_TYPES, task_cues("Pretend you are a pirate captain.")))["roleplay"] > 0
    assert dict(zip(TASK_TYPES, task_cues("Solve for x: 3x + 2 = 11")))["math"] > 0
    assert dict(zip(TASK_TYPES, task_cues("Write a short poem about autumn.")))["writing"] > 0
    assert not any(task_cues("Good morning!"))
    features = prompt_features(["Extract the dates from the following email as JSON."], [12])
    assert features.shape == (1, len(FEATURE_NAMES)) and features[0, FEATURE_NAMES.index("task_extraction")] > 0


def test_an_artefact_of_the_first_feature_set_still_loads_and_reads_its_columns(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    F = rng.standard_normal((60, len(FEATURE_NAMES))).astype(np.float32)
    Y = (rng.random((60, 2)) < 0.5).astype(float)
    old = LinearPredictor("ridge", n_members=1).fit(X, F[:, :21], Y)  # trained before the task cues existed
    old.save(tmp_path / "old.npz")
    loaded = load_predictor(tmp_path / "old.npz")
    assert np.allclose(loaded.predict(X, F), old.predict(X, F[:, :21]))
    assert feature_width(FEATURE_NAMES[:21], 1) == 21
    with pytest.raises(ValueError):
        feature_width(FEATURE_NAMES[1:22], 1)  # not a prefix: retrain


# ----------------------------------------------------------------------------- the transfer router

def _transfer_data(seed: int = 0):
    """Two sources. The stronger model helps on 'code' prompts (a task cue), not on chat; the embedding
    has a cluster per source, and a third, far cluster is never trained on."""
    rng = np.random.default_rng(seed)
    d = 16
    centres = rng.standard_normal((3, d)) * 4
    texts, X, gain, source = [], [], [], []
    for s in (0, 1):
        for i in range(200):
            code = i % 2 == 0
            texts.append("Write a Python function to sort a list" if code else "Tell me about your weekend")
            X.append(centres[s] + rng.standard_normal(d))
            gain.append(float(rng.random() < (0.6 if code else 0.1)))
            source.append(f"src{s}")
    X = np.array(X, dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    F = prompt_features(texts, [12] * len(texts))
    gain = np.array(gain)
    scores = np.stack([np.ones_like(gain), 1 - gain], axis=1)  # big always right, small wrong where it helps
    far = centres[2] + rng.standard_normal((4, d))
    far = (far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32)
    return X, F, scores, gain, np.array(source), far


def test_transfer_router_learns_the_task_type_and_widens_its_uncertainty_far_away(tmp_path):
    X, F, scores, gain, sources, far = _transfer_data()
    router = TransferPredictor(centres=16, gate_low=0.5, gate_high=0.8).fit(
        X, F, scores, model_names=["big", "small"], gain=gain, sources=sources)
    far_text = ["Write a Python function to reverse a string", "Tell me about your holidays",
                "Write a Python function to merge two dicts", "Tell me about your day"]
    far_F = router.scaler.transform(prompt_features(far_text, [12] * 4), 4)
    predicted, sd, gate = router.gain(far, far_F)
    assert (gate < 0.2).all()  # nothing like them was trained on
    assert predicted[0] > predicted[1] + 0.2 and predicted[2] > predicted[3] + 0.2  # the task type still tells
    near_pred, near_sd, near_gate = router.gain(X[:10], router.scaler.transform(F[:10], 10))
    assert near_gate.mean() > 0.8 and near_sd.mean() < sd.mean()
    quality, quality_sd = router.predict_with_uncertainty(far, prompt_features(far_text, [12] * 4))
    assert np.allclose(quality[:, 0] - quality[:, 1], predicted) and (quality_sd > 0).all()
    router.save(tmp_path / "t.npz")
    again = load_predictor(tmp_path / "t.npz")
    assert isinstance(again, TransferPredictor)
    assert np.array_equal(again.predict(far, prompt_features(far_text, [12] * 4)), router.predict(far, prompt_features(far_text, [12] * 4)))


def test_transfer_router_refuses_data_without_absolute_labels():
    X, F, scores, gain, sources, _ = _transfer_data()
    with pytest.raises(ValueError, match="absolute"):
        TransferPredictor(centres=8).fit(X, F, scores, gain=np.full(len(gain), np.nan), sources=sources)
    with pytest.raises(ValueError, match="gain labels"):
        TransferPredictor().fit(X, F, scores)


# ----------------------------------------------------------------------------- the CLI, as a user runs it

CHAT = ["Tell me about your favourite season", "Say something nice about cats", "What should I eat tonight?",
        "Describe a sunny morning", "How was your weekend?", "Give me a compliment"]
CODE = ["Write a Python function that reverses a linked list", "Fix the bug in this JavaScript: const x = [1,2;",
        "Write a SQL query that counts users per city", "Implement binary search in C++",
        "Write a bash script that renames files", "Refactor this Java class to use an interface"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    paths = []
    for s, (big, small) in enumerate([("big", "small"), ("big", "small"), ("BIG-v2", "small")]):
        rows = []
        for k, prompt in enumerate(CHAT + CODE):
            text = f"{prompt} (set {s}, item {k})"
            helps = prompt in CODE
            rows += [{"prompt": text, "model": big, "score": 9, "label_kind": "judge_score"},
                     {"prompt": text, "model": small, "score": 4 if helps else 9, "label_kind": "judge_score"}]
        path = folder / f"source{s}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows))
        paths.append(str(path))
    (folder / "prompts.jsonl").write_text('{"prompt": "Write a Go function that parses JSON"}\n'
                                          '{"prompt": "Tell me something cheerful"}\n')
    return folder, paths


def test_train_transfer_with_aliases_and_route_onto_a_pool(sources, tmp_path):
    folder, paths = sources
    out = tmp_path / "r.npz"
    assert main(["train", *paths, "--predictor", "transfer", "--alias", "BIG-v2=big", "--models", "big", "small",
                 "--anchor", "big=0.85", "--anchor", "small=0.5", "-o", str(out)]) == 0
    router = load_predictor(out)
    assert router.model_names == ["big", "small"] and router.info["label_sources"]["source2"]["pair_gap"] > 0
    pool = tmp_path / "pool.yaml"
    pool.write_text("models:\n  - {name: cheap, provider: openai, prices: {input: 0.2, output: 0.2}}\n"
                    "  - {name: dear, provider: openai, prices: {input: 20, output: 20}}\n")
    done = subprocess.run([sys.executable, "-m", "pointsman.cli", "route", "--router", str(out), "--config", str(pool),
                           str(folder / "prompts.jsonl")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, chat = [json.loads(line) for line in done.stdout.splitlines()]
    gap = lambda row: row["quality"]["dear"] - row["quality"]["cheap"]  # noqa: E731
    assert gap(code) > gap(chat)


def test_eval_cross_source_reports_every_held_out_source(sources, tmp_path, capsys):
    _, paths = sources
    assert main(["eval", "--cross-source", *paths, "--folds", "0", "--router", "default", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cross_source.json").read_text())
    assert [row["source"] for row in report["sources"]] == ["source0", "source1", "source2"]
    for row in report["sources"]:
        assert set(row["apgr"]) >= {"random", "length", "task-type", "knn (same labels)", "transfer", "default", "oracle"}
        assert row["apgr"]["random"] == pytest.approx(0.5)
        assert row["apgr"]["transfer"] > 0.6  # the code prompts are where the big model helps, in every source
        assert row["reliability"]
    assert "held-out source" in (tmp_path / "cross_source.md").read_text()
    assert main(["eval", "--cross-source", paths[0], "--folds", "0", "--out", str(tmp_path)]) == 2
    assert "two or more sources" in capsys.readouterr().err


def test_route_with_the_shipped_router_needs_no_trained_file(sources):
    folder, _ = sources
    done = subprocess.run([sys.executable, "-m", "pointsman.cli", "route", "--router", "default", str(folder / "prompts.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, chat = [json.loads(line) for line in done.stdout.splitlines()]
    assert code["tier"] == "semantic" and len(code["quality"]) == 2
