"""Where the cache encoder's time goes for one short question, and what the lean int8 graph saves.

The cache's query embedding is one MiniLM-dup run on one ~14-token question. This times, one text at a time
and interleaved (so load from other work on the machine spreads over all variants), the same Quora questions
(text_b of ../shared/data/qqp/pairs.jsonl) through:

  graphs, `session.run` only (wall and thread CPU time; how far each is from the plain int8 graph's output):
    plain int8    the graph as converted before the lean rewrite (MatMulInteger, Cast, Mul, Mul, Add per product)
    lean int8     the shipped conversion (`dynamic_int8_model`: key transposes and NaN guards rewritten,
                  MatMulIntegerToFloat): must be bit-identical to plain
    + ORT extended  the lean graph with all of ONNX Runtime's extended fusions (they move the int8 rounding)
    + MHA         the lean graph with each attention as one com.microsoft MultiHeadAttention (not shipped:
                  it moves the int8 rounding, so the acceptance model would need refitting)
    2 threads     the lean graph with two intra-op threads, spinning on and off
  the Python around it: tokenising (encode_batch of one text vs encode), mean pooling (masked vs unpadded),
  prompt features, and the whole `encode_with_features` call.

With `--profile`, instead: ONNX Runtime's own profiler on the plain and the lean graph (`--n` questions each), the
kernel time per operator type (the profiler adds its own cost per node: compare shares, not absolute times).

Results: bench/cache/GATEWAY.md.

    .venv/bin/python bench/cache/encoder_graph.py [--n 1000] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway_latency import real_questions  # noqa: E402

from pointsman.embed.encoder import MiniLMEncoder, _convert_dynamic_int8, dynamic_int8_model, patched_model  # noqa: E402
from pointsman.embed.features import prompt_features  # noqa: E402
from pointsman.embed.registry import DUP_PATCH  # noqa: E402


def with_mha(src: Path, out: Path) -> None:
    """The graph with each layer's attention (from the Q, K, V bias adds to the output projection's input) as
    one MultiHeadAttention node; the nodes left unused are dropped."""
    model = onnx.load(str(src))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    new = [helper.make_node("Cast", ["attention_mask"], ["mask_int32"], to=TensorProto.INT32, name="mask_int32")]

    def bias_node(bias: str) -> Any:
        return next(n for n in g.node if bias in n.input)

    for i in range(64):
        pre = f"inner.encoder.layer.{i}.attention."
        if not any(pre + "self.query.bias" in n.input for n in g.node):
            break
        q, k, v = (bias_node(pre + f"self.{x}.bias").output[0] for x in ("query", "key", "value"))
        x = bias_node(pre + "output.dense.bias")
        while x.op_type not in ("MatMulInteger", "MatMulIntegerToFloat"):
            x = next(producer[t] for t in x.input if t in producer)
        quant = producer[x.input[0]]
        new.append(helper.make_node("MultiHeadAttention", [q, k, v, "", "mask_int32"], [f"mha_{i}"],
                                    domain="com.microsoft", num_heads=12, name=f"mha_{i}"))
        quant.input[0] = f"mha_{i}"
    nodes = list(g.node) + new
    producer = {o: n for n in nodes for o in n.output}
    alive: set[str] = set()
    stack = [o.name for o in g.output]
    while stack:
        p = producer.get(stack.pop())
        if p is not None and p.name not in alive:
            alive.add(p.name)
            stack.extend(i for i in p.input if i)
    order, ready, pending = [], {i.name for i in g.input} | {t.name for t in g.initializer} | {""}, [n for n in nodes if n.name in alive]
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        for n in pending:
            if n not in rest:
                order.append(n)
                ready.update(n.output)
        pending = rest
    del g.node[:]
    g.node.extend(order)
    used = {i for n in g.node for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.save(model, str(out))


def session(path: Path, level: str = "basic", threads: int = 1, spin: str | None = None) -> Any:
    so = ort.SessionOptions()  # as MiniLMEncoder.load makes it, unless varied here
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if level == "extended"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    if spin is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def profile(graphs: dict[str, Path], ids: list[list[int]], work: Path) -> None:
    """Kernel time per operator type and run, from onnxruntime's profiler."""
    per_op: dict[str, dict[str, float]] = {}
    for name, path in graphs.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.enable_cpu_mem_arena = False
        so.enable_mem_pattern = False
        so.enable_profiling = True
        so.profile_file_prefix = str(work / name.split()[0])
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        for x in ids:
            a = np.asarray([x], dtype=np.int64)
            sess.run(None, {"input_ids": a, "attention_mask": np.ones_like(a), "token_type_ids": np.zeros_like(a)})
        events = json.loads(Path(sess.end_profiling()).read_text())
        totals: dict[str, float] = defaultdict(float)
        runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                totals[e["args"]["op_name"]] += e["dur"] / 1000 / len(runs)
        per_op[name] = totals
        nodes = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
        per_op[name]["(nodes)"] = sum(nodes.values())
        per_op[name]["(model_run p50)"] = statistics.median(runs) / 1000
    ops = sorted({op for t in per_op.values() for op in t if not op.startswith("(")},
                 key=lambda op: -max(t.get(op, 0.0) for t in per_op.values()))
    names = list(per_op)
    print(f"{len(ids)} questions, profiled; load average {os.getloadavg()[0]:.2f}\n")
    print("| operator | " + " | ".join(f"{n}: ms per run" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for op in ["(model_run p50)", "(nodes)", *ops]:
        print(f"| {op} | " + " | ".join(f"{per_op[n].get(op, 0.0):.3f}" if op != "(nodes)" else f"{per_op[n][op]:.0f}"
                                          for n in names) + " |")
    print("| (kernel sum) | " + " | ".join(f"{sum(v for k, v in per_op[n].items() if not k.startswith('(')):.3f}"
                                           for n in names) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="questions, each through every variant")
    parser.add_argument("--profile", action="store_true", help="per-operator kernel times of the plain and lean graphs")
    args = parser.parse_args()
    texts = real_questions(args.n)
    if not texts:
        print("no questions: ../shared/data/qqp/pairs.jsonl is missing")
        return 1
    encoder = MiniLMEncoder(patch=DUP_PATCH, cache_size=0).load()
    source = patched_model(encoder.model_path(), DUP_PATCH)
    lean = dynamic_int8_model(source)
    work = Path(tempfile.mkdtemp(prefix="pointsman-encgraph-"))
    plain = work / "plain.onnx"
    _convert_dynamic_int8(source, plain, lean=False)
    if args.profile:
        profile({"plain int8": plain, "lean int8": lean}, encoder.tokenize(texts)[0], work)
        return 0
    mha = work / "mha.onnx"
    with_mha(lean, mha)
    graphs = {"plain int8 (before)": session(plain), "lean int8 (shipped)": session(lean),
              "lean + ORT extended fusions": session(lean, "extended"), "lean + MultiHeadAttention": session(mha),
              "lean, 2 threads, spinning": session(lean, threads=2, spin="1"),
              "lean, 2 threads, no spinning": session(lean, threads=2, spin="0")}
    tokenizer = encoder.loaded_tokenizer()
    ids, full = encoder.tokenize(texts)
    hidden_of = {}

    def masked_pool(h: np.ndarray) -> np.ndarray:  # the pooling before this change
        m = np.ones((1, h.shape[1]), dtype=np.int64)[:, :, None].astype(np.float32)
        pooled = (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)

    def unpadded_pool(h: np.ndarray) -> np.ndarray:
        pooled = h.sum(axis=1) / np.float32(h.shape[1])
        return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)

    steps: dict[str, Callable[[int], Any]] = {
        "tokenise: encode_batch([text]) (before)": lambda k: tokenizer.encode_batch([texts[k]], add_special_tokens=True),
        "tokenise: encode(text) (now)": lambda k: tokenizer.encode(texts[k], add_special_tokens=True),
        "pooling, masked (before)": lambda k: masked_pool(hidden_of["lean int8 (shipped)"]),
        "pooling, unpadded (now)": lambda k: unpadded_pool(hidden_of["lean int8 (shipped)"]),
        "prompt features": lambda k: prompt_features([texts[k]], full[k:k + 1], 256),
        "encode_with_features, whole call (now)": lambda k: encoder.encode_with_features([texts[k]]),
    }
    wall: dict[str, list[float]] = {name: [] for name in [*graphs, *steps]}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in graphs}
    for k, x in enumerate(ids):
        feeds = {"input_ids": np.asarray([x], dtype=np.int64)}
        feeds["attention_mask"] = np.ones_like(feeds["input_ids"])
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        names = list(graphs) if k % 2 else list(reversed(graphs))
        for name in names:
            started, started_cpu = time.perf_counter(), time.thread_time()
            hidden = graphs[name].run(None, feeds)[0]
            wall[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append((time.thread_time() - started_cpu) * 1000)
            hidden_of[name] = hidden
            pooled[name].append(unpadded_pool(hidden)[0])
        for name, step in (steps.items() if k % 2 else reversed(steps.items())):
            started, started_cpu = time.perf_counter(), time.thread_time()
            step(k)
            wall[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append((time.thread_time() - started_cpu) * 1000)
    same = [np.array_equal(masked_pool(hidden_of["lean int8 (shipped)"]), unpadded_pool(hidden_of["lean int8 (shipped)"]))]
    reference = np.array(pooled["plain int8 (before)"])
    load = os.getloadavg()
    print(f"{len(texts)} Quora questions, one at a time, interleaved; tokens incl. [CLS]/[SEP]: p50 "
          f"{statistics.median(full):.0f}, mean {statistics.mean(full):.1f}; load average after {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; onnxruntime {ort.__version__}\n")
    print("| variant | wall p50 (ms) | wall p10 (ms) | CPU p50, calling thread (ms) | min cosine to plain | "
          "bit-identical to plain |")
    print("|---|---|---|---|---|---|")
    for name in graphs:
        got = np.array(pooled[name])
        cos = float((got * reference).sum(1).min())
        print(f"| {name} | {statistics.median(wall[name]):.3f} | {np.percentile(wall[name], 10):.3f} | "
              f"{statistics.median(cpu[name]):.3f} | {cos:.6f} | {np.mean(np.all(got == reference, axis=1)):.0%} |")
    print("\n| Python step | wall p50 (ms) | wall p10 (ms) | CPU p50 (ms) |\n|---|---|---|---|")
    for name in steps:
        print(f"| {name} | {statistics.median(wall[name]):.3f} | {np.percentile(wall[name], 10):.3f} | "
              f"{statistics.median(cpu[name]):.3f} |")
    print(f"\nunpadded pooling bit-identical to masked pooling: {all(same)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
