"""The injection guard: prompt-injection and jailbreak detection as a stage and a routing signal.

Two sides of a conversation are scored apart, each against its own threshold:
* the user's turns: the routing text (the last user message first, then the earlier ones), with the static
  embedding the semantic tier computes for it (shared through ``RouteContext.embedding``, same window);
* indirect injection: tool and function results (retrieved documents, web pages, API answers), which quote
  instructions more often than people type them.
A text longer than ``CHUNK_CHARS`` is also scored in pieces, the highest counting, so that an attack is not
averaged away by the text around it.

Two stages (``second_stage``, on by default): the first (detector.py: rules, then a linear head on cheap
features, tens of microseconds) reads every text; the texts (or pieces) whose first-stage score reaches the gate
are read again by MiniLM fine-tuned for the task (second_stage.py, milliseconds), and both readings decide
them together. Without the second stage, the first stage's score decides.

Actions, per policy, team or key (``overrides``): ``flag`` (the ``x-pointsman-guards`` header and the ledger
row's reason), ``route`` (the request goes to ``route_to``, no tier runs), ``block`` (400 ``prompt_injection``).
A flagged request skips the cache, both ways: an attack's answer is not kept for a paraphrase of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from pointsman.errors import GatewayError
from pointsman.guards.base import select
from pointsman.guards.config import InjectionConfig
from pointsman.guards.detector import DEFAULT_HEAD, InjectionHead, Score
from pointsman.guards.rules import match_rule
from pointsman.guards.second_stage import DEFAULT_SECOND_STAGE, SecondStage
from pointsman.text import text_of

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange
    from pointsman.core import RouteContext
    from pointsman.embed.base import Embedder
    from pointsman.embed.registry import Embedders
    from pointsman.gateway.pool import Pool

__all__ = ["InjectionGuard", "INDIRECT_ROLES", "CHUNK_CHARS", "chunks"]

T = TypeVar("T")

INDIRECT_ROLES = ("tool", "function")
CHUNK_CHARS = 1000  # the head was trained on short texts: longer ones are also read in pieces of about this size
MAX_CHUNKS = 32  # of one text (32,000 characters); beyond, the tail is read by the rules only


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Pieces of about ``size`` characters, cut at whitespace, overlapping by a quarter."""
    out: list[str] = []
    start = 0
    while start < len(text) and len(out) < MAX_CHUNKS:
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + size // 2, end)
            end = space if space != -1 else end
        out.append(text[start:end])
        if end >= len(text):
            break
        start = max(start + 1, end - size // 4)
    return out


def _read(option: str, path: str | Path, load: Callable[[str | Path], T]) -> T:
    """A detector artefact, or an error naming the option that points at a file that cannot be read."""
    try:
        return load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"guards.injection.{option}: cannot read {path}: {exc}") from exc


class InjectionGuard:
    name = "injection"

    def __init__(self, config: InjectionConfig, pool: "Pool", policy_of: Callable[[str], str | None],
                 embedders: "Embedders", window: int | None = None) -> None:
        self.config = config
        self.pool = pool
        self.policy_of = policy_of
        self.embedder: Embedder = embedders.get("static")
        self.window = window  # the semantic tier's: the same (text, window) is embedded once per request
        head_path = DEFAULT_HEAD if config.head == "default" else config.head
        self.head = _read("head", head_path, InjectionHead.load)
        if self.embedder.model_id != self.head.encoder:
            raise ValueError(f"guards.injection.head was trained on {self.head.encoder}, the gateway's static encoder "
                             f"is {self.embedder.model_id}: retrain it (bench/guards/train.py)")
        self.second: SecondStage | None = None
        self.second_embedder: Embedder | None = None
        self.gate = 0.0
        if config.second_stage is not None:
            path = DEFAULT_SECOND_STAGE if config.second_stage == "default" else config.second_stage
            self.second = _read("second_stage", path, SecondStage.load)
            if self.second.info.get("first_stage") != self.head.fingerprint:
                raise ValueError(f"guards.injection.second_stage {path} was calibrated with another first stage than "
                                 f"guards.injection.head ({head_path}): recalibrate it (bench/guards/finetune.py) "
                                 "or set second_stage: null")
            self.second_embedder = embedders.get(self.second.encoder_kind)
            if self.second_embedder.model_id != self.second.encoder:
                raise ValueError(f"guards.injection.second_stage {path} was made with {self.second.encoder}, the "
                                 f"gateway's {self.second.encoder_kind} is {self.second_embedder.model_id}")
            self.gate = self.second.gate_at(config.second_stage_recall)
        for target in [config.route_to, *(o.route_to for o in config.overrides)]:
            if target is not None and target not in pool:
                raise ValueError(f"guards.injection.route_to names {target!r}, which is not a pool model")

    def thresholds(self, fpr: float | None) -> tuple[float, float]:
        """(user side, indirect side) score thresholds: an override's fpr, else the config's thresholds, else the
        head's calibration at the config's fprs."""
        calibrated = self.head if self.second is None else self.second  # the stage whose score decides
        if fpr is not None:
            bar = calibrated.threshold_at(fpr)
            return bar, bar
        config = self.config
        return (config.threshold if config.threshold is not None else calibrated.threshold_at(config.fpr),
                config.indirect_threshold if config.indirect_threshold is not None
                else calibrated.threshold_at(config.indirect_fpr))

    async def _score(self, ctx: "RouteContext", text: str, shared: bool) -> Score:
        rule = match_rule(text)
        if rule is not None:
            return Score(1.0, rule)
        if shared:  # the routing text: the embedding the semantic tier uses (or will use) for this request
            embedding = (await ctx.embedding(self.embedder, max_tokens=self.window))[0]
        else:
            embedding = (await ctx.embedding(self.embedder, text))[0]
        first = [(self.head.score(text, embedding), text)]
        if len(text) > CHUNK_CHARS:
            for piece in chunks(text):
                first.append((self.head.score(piece, (await self.embedder.embed_with_features(piece))[0]), piece))
        best = max(first, key=lambda item: item[0].score)[0]
        if self.second is None:
            return best
        assert self.second_embedder is not None
        # the second stage decides the texts (or pieces: the whole of a long text is read by MiniLM only as far as
        # its first piece) that reach the gate, the most suspect first and at most `second_stage_reads` of them;
        # below the gate nothing is flagged
        candidates = first[1:] if len(first) > 1 else first
        reached = sorted((item for item in candidates if item[0].score >= self.gate), key=lambda item: -item[0].score)
        decided: Score | None = None
        for found, piece in reached[:self.config.second_stage_reads]:
            deep = Score(self.second.score(await self.second_embedder.embed(piece), found.logit), stage=2)
            if decided is None or deep.score > decided.score:
                decided = deep
        return decided if decided is not None else Score(best.score, stage=1, gated=True)

    async def score(self, ctx: "RouteContext") -> tuple[Score, Score | None]:
        """(the user's turns, the tool results or None when there are none)."""
        user = await self._score(ctx, ctx.routing_text, shared=True) if ctx.routing_text else Score(0.0)
        indirect: Score | None = None
        if self.config.indirect:
            for message in ctx.messages:
                if isinstance(message, dict) and message.get("role") in INDIRECT_ROLES:
                    text = text_of(message.get("content"), " ")
                    if text:
                        found = await self._score(ctx, text, shared=False)
                        if indirect is None or found.score > indirect.score:
                            indirect = found
        return user, indirect

    def action(self, ex: "Exchange") -> tuple[str, str | None, float | None]:
        config = self.config
        override = select(config.overrides, self.policy_of(ex.request.model), ex.record.team, ex.record.key_id)
        if override is None:
            return config.action, config.route_to, None
        return override.action or config.action, override.route_to or config.route_to, override.fpr

    async def __call__(self, ex: "Exchange") -> bool:
        assert ex.ctx is not None
        action, route_to, fpr = self.action(ex)
        if action == "off":
            return False
        user, indirect = await self.score(ex.ctx)
        user_bar, indirect_bar = self.thresholds(fpr)
        hits = [f"{side} {s.score:.3f}" + (f" rule {s.rule}" if s.rule else "")
                for side, s, bar in (("user", user, user_bar), ("tool", indirect, indirect_bar))
                if s is not None and s.flagged(bar)]
        if not hits:
            return False
        ex.ctx.sensitive = True
        ex.guard.notes.append(f"injection {', '.join(hits)} {action}")
        if action == "block":
            raise GatewayError(400, f"the request was refused as a likely prompt injection ({', '.join(hits)}); "
                                    "if it is not one, tell the gateway's operator the request id",
                               code="prompt_injection")
        if action == "route":
            assert route_to is not None  # the config requires it with action route
            if not ex.ctx.permits(route_to):
                raise GatewayError(400, f"the request was flagged as a likely prompt injection and goes to {route_to}, "
                                        f"which does not meet its constraints: {'; '.join(ex.ctx.constraints)}",
                                   code="no_compliant_model")
            ex.guard.route_to = route_to
        return False
