"""The pool and policy schema, validated with msgspec so errors name the exact field. A field that takes one
of a few words is a ``Literal``: msgspec refuses any other, and the loader names the accepted ones."""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from pointsman.guards.config import GuardsConfig
from pointsman.observability.config import ObservabilityConfig

Capability = Literal["tools", "vision", "json"]
CAPABILITIES = frozenset(get_args(Capability))

DEFAULT_LAMBDA = 0.25  # the knob's default (SemanticTierConfig.lambda_); cascades without a semantic tier use it too


class Prices(msgspec.Struct, forbid_unknown_fields=True):
    """USD per million tokens. A rate left out (cached_input, cache_write) is the price snapshot's discount applied
    to `input` when the snapshot knows the model, else the input rate (accounting/prices.py)."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None  # prompt tokens read from the provider's prompt cache
    cache_write: float | None = None  # prompt tokens written to it (Anthropic's cache creation)

    def blended(self) -> float:
        """USD per million tokens for a typical 3:1 input:output mix: how models are ordered and compared by price."""
        return 0.75 * self.input + 0.25 * self.output

    def __post_init__(self) -> None:
        if min(self.input, self.output, self.cached_input or 0.0, self.cache_write or 0.0) < 0:
            raise ValueError("prices must be >= 0")


class UnsetPrices(Prices):
    """A model's prices when its config gives none: the price snapshot's apply (accounting/prices.py)."""


class Contract(msgspec.Struct, forbid_unknown_fields=True):
    """What the provider's contract bills for a model, so that spend shows what finance will see."""

    rate: Prices | None = None  # every token billed at this committed rate, whatever the list price
    monthly_commitment_usd: float = 0.0  # paid each month whatever the use; use beyond it is billed on top

    def __post_init__(self) -> None:
        if self.monthly_commitment_usd < 0:
            raise ValueError("contract.monthly_commitment_usd must be >= 0")


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One model in the pool. `api_key_env` names an environment variable; keys never live in files."""

    name: str
    provider: str  # a key of pointsman.providers.PROVIDERS: "openai", "anthropic", "local"
    # "embedding": serves POST /v1/embeddings only (passed through), never routed chat requests
    kind: Literal["chat", "embedding"] = "chat"
    model: str | None = None  # the upstream's model id; defaults to `name`
    base_url: str | None = None
    api_key_env: str | None = None
    prices: Prices = msgspec.field(default_factory=UnsetPrices)  # none given: the price snapshot's
    contract: Contract | None = None
    context_window: int = 8192
    max_output_tokens: int | None = None
    capabilities: list[Capability] = msgspec.field(default_factory=list)
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    # A prior of how capable the model is, 0..1 (the learned router maps its difficulty score onto it).
    quality: float | None = None
    timeout_s: float = 60.0  # whole request (non-streaming) / gap between chunks (streaming)
    connect_timeout_s: float = 5.0
    max_retries: int = 2
    fallbacks: list[str] | None = None  # when a client names this model and it fails: these, in order
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Provider-specific settings (e.g. the local model's n_ctx or threads).
    options: dict[str, object] = msgspec.field(default_factory=dict)

    @property
    def upstream_model(self) -> str:
        return self.model or self.name

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError(f"model {self.name!r}: timeouts must be > 0")
        if self.max_retries < 0:
            raise ValueError(f"model {self.name!r}: max_retries must be >= 0")


class RuleMatch(msgspec.Struct, forbid_unknown_fields=True):
    """Conditions of one rule; all given conditions must hold."""

    regex: str | None = None  # searched in the last user message
    keywords: list[str] | None = None  # any of them, case-insensitive, in the last user message
    min_chars: int | None = None  # length of the whole conversation's text
    max_chars: int | None = None
    has_tools: bool | None = None
    min_turns: int | None = None  # number of user messages in the conversation
    json_mode: bool | None = None  # response_format asks for JSON


class Rule(msgspec.Struct, forbid_unknown_fields=True):
    when: RuleMatch
    route: str  # a pool model, or another policy as "router/<name>"
    name: str | None = None


class SemanticTierConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Tier 2: predicted quality per model from a trained router, then the knob.

    Choose argmax(quality - lambda * relative cost); or, with `floor`, the cheapest model whose predicted
    quality clears it. Both are overridable per request (headers x-pointsman-lambda / x-pointsman-floor).
    """

    router: str = "default"  # "default" = the router shipped in the package, or a path to a trained .npz
    # 0.25: the shipped router (transfer) then sends about a quarter of its training prompts, each source weighted
    # the same, to the stronger model of its pair (bench/router/CROSS_SOURCE.md); a setting, not a result.
    lambda_: float = msgspec.field(default=DEFAULT_LAMBDA, name="lambda")
    floor: float | None = None
    min_confidence: float = 0.0  # below it the decision is deferred to tier 3 (when a judge is configured)
    # for a tool-using request (an agent), the share of its input priced at each model's cached-input rate: an
    # agent resends its history every turn and the provider's prompt cache serves it (a setting, not a measurement;
    # a continuing conversation's own history share is used when larger)
    agent_cached_share: float = 0.8

    def __post_init__(self) -> None:
        if not 0 <= self.agent_cached_share <= 1:
            raise ValueError("semantic.agent_cached_share must be within 0..1")
        if self.lambda_ < 0:
            raise ValueError("semantic.lambda must be >= 0")
        if self.floor is not None and not 0 <= self.floor <= 1:
            raise ValueError("semantic.floor must be within 0..1")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError("semantic.min_confidence must be within 0..1")


class JudgeTierConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Tier 3: a small pool model grades the prompt's difficulty, for prompts tier 2 is unsure of."""

    model: str
    timeout_s: float = 3.0




class CascadeConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Cheap answer first, a quality check, escalation (README, "Cascades").

    With `mode: route` (cascade routing) each prompt either goes straight to the routed model or starts a
    cascade, whichever has the higher expected quality - lambda * cost, the cheap attempt's cost counted;
    `mode: always` starts every routed prompt with the cascade. After an answer, the next model is called
    when the verifiers' score is below `threshold`, or, with no threshold, when the next model's predicted
    quality minus lambda times its cost beats that score. Per request: x-pointsman-cascade-threshold and
    x-pointsman-cascade (off | always | route).
    """

    models: list[str] | None = None  # the ladder, cheapest first; None = cheapest eligible, then the routed model
    mode: Literal["route", "always"] = "route"
    verifiers: list[str] = msgspec.field(default_factory=lambda: ["finish", "refusal", "json", "tools", "arithmetic", "learned"])
    verifier: str = "default"  # the learned verifier: "default" (shipped) or a path to a trained artefact
    threshold: float | None = None  # accept an answer scoring >= threshold; None = derived from lambda
    lambda_: float | None = msgspec.field(default=None, name="lambda")  # None = the semantic tier's lambda (else its default)
    max_steps: int = 2  # models called at most, the first included
    latency_budget_s: float | None = None  # no escalation once this much time has passed since the request came
    cost_budget_usd: float | None = None  # no escalation whose estimated cost would take the total past this
    stream: Literal["hold", "skip"] = "hold"  # streamed requests: "hold" the cheap answer until accepted, or "skip" the cascade
    # "agreement": likelihood ratios of a second cheap sample agreeing / differing (bench/cascade/AGREEMENT.md)
    agree_ratio: float = 3.2
    differ_ratio: float = 0.59
    resample_temperature: float = 0.7

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError("cascade.threshold must be within 0..1")
        if self.lambda_ is not None and self.lambda_ < 0:
            raise ValueError("cascade.lambda must be >= 0")
        if self.max_steps < 2:
            raise ValueError("cascade.max_steps must be >= 2 (a cascade calls at least two models)")
        if self.models is not None and len(self.models) < 2:
            raise ValueError("cascade.models must list at least two models, cheapest first")
        if self.agree_ratio <= 0 or self.differ_ratio <= 0:
            raise ValueError("cascade.agree_ratio and cascade.differ_ratio must be > 0")
        for name, value in (("latency_budget_s", self.latency_budget_s), ("cost_budget_usd", self.cost_budget_usd)):
            if value is not None and value <= 0:
                raise ValueError(f"cascade.{name} must be > 0")


class Policy(msgspec.Struct, forbid_unknown_fields=True):
    """A named routing policy: rules first, then the semantic tier (and its judge), then the default.
    Fallbacks follow the chosen model."""

    rules: list[Rule] = msgspec.field(default_factory=list)
    semantic: SemanticTierConfig | None = None
    judge: JudgeTierConfig | None = None
    cascade: CascadeConfig | None = None  # cheap model first, verified, escalated (README, "Cascades")
    sticky_s: float = 0.0  # > 0: a session (x-pointsman-session) keeps its model this long
    # a tool-using session (an agent: named, or recognised from its opening) keeps its model this long; 0 = it may
    # switch (switching throws away the provider's prompt cache: routing/sticky.py)
    agent_sticky_s: float = 3600.0
    default: str | None = None  # a pool model; None = the cheapest eligible model
    fallbacks: list[str] | None = None  # None = every other eligible model, cheapest first
    # the tiers in order (routing/tiers.py): built-ins by name (rules, sticky, semantic, judge), others as
    # {kind: <registered name or package.module:Class>, ...settings}; None = the built-ins this policy configures
    tiers: list[str | dict[str, Any]] | None = None


class CacheVerifyConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Verification sampling and the online error bound (README, "Cache"): a share of requests is labelled
    from live traffic (a sampled semantic hit is also answered upstream and the two answers compared; a sampled
    miss compares its fresh answer with its nearest candidate's) and each tenant's acceptance threshold is
    recalibrated from its labels (cache/online.py)."""

    share: float = 0.0  # of cacheable requests sampled (0 = off: the shipped threshold for everyone)
    # off-path: the client gets the cached answer, the check runs after; on-path: the client waits for the fresh
    # answer and gets it when the cached one is judged different (on_path_teams: only for these x-pointsman-team)
    mode: Literal["off-path", "on-path"] = "off-path"
    on_path_teams: list[str] = msgspec.field(default_factory=list)
    budget_usd_per_day: float = 1.0  # verification calls stop (and with them the sampling) once they cost this
    judge: str | None = None  # a pool model asked whether two answers agree; None: compare answer embeddings
    answer_similarity: float = 0.9  # answers this close (cache encoder, cosine) and with the same numbers agree
    min_labels: int = 500  # labels a tenant needs before its own proven threshold replaces the shipped one
    window: int = 2000  # labels kept per tenant (the newest): a tenant's traffic may shift
    confidence: float = 0.95  # of the one-sided bound on wrong reuse
    min_threshold: float = 0.5  # the acceptance probability no tenant's threshold goes below
    max_tenants: int = 1000  # tenants tracked (least recently labelled dropped): memory stays bounded
    metrics_top: int = 20  # tenants shown in /admin/cache/metrics (most labels first)

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError("cache.verify.share must be within 0..1")
        if self.budget_usd_per_day < 0:
            raise ValueError("cache.verify.budget_usd_per_day must be >= 0")
        if not 0 < self.confidence < 1 or not 0 <= self.min_threshold <= 1 or not -1 <= self.answer_similarity <= 1:
            raise ValueError("cache.verify: confidence within 0..1 (exclusive), min_threshold within 0..1, "
                             "answer_similarity within -1..1")
        if self.min_labels < 0 or self.window < 1 or self.max_tenants < 1 or self.metrics_top < 0:
            raise ValueError("cache.verify: min_labels >= 0, window >= 1, max_tenants >= 1, metrics_top >= 0")


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The exact + semantic answer cache (README, "Cache")."""

    enabled: bool = True
    store: str = "memory"  # "memory" (in-process) or a redis:// URL shared by replicas
    prefix: str = "pointsman:cache"  # Redis key prefix
    semantic: bool = True  # the semantic layer (else exact matches only)
    # the wrong-reuse bound the acceptance threshold is calibrated for (0.005, 0.01, 0.02 or 0.05; another value
    # takes the nearest stricter): the share of requests without a cached duplicate that get a wrong answer, so
    # the share of all requests stays under it whatever the traffic's mix of repeats
    delta: float = 0.02
    ttl_s: float = 24 * 3600.0
    max_entries: int = 100_000
    # the cache's memory in each process (entries, their index and side maps, estimated), least recently used
    # evicted past it; with Redis it bounds each replica's mirror
    max_bytes: int = 256 << 20
    allow_sampled: bool = False  # serve and store requests with temperature > 0
    default_temperature: float = 1.0  # what an absent temperature means upstream (OpenAI: 1.0)
    tools_side_effect_free: bool = False  # tool-call answers may be cached
    # the semantic layer's encoder: "minilm-dup" (MiniLM's first three layers fine-tuned on duplicate
    # questions: bench/cache/FINETUNE.md) or "minilm" (the stock six layers)
    encoder: Literal["minilm-dup", "minilm"] = "minilm-dup"
    # a look-up (embedding included) or a store that takes longer is given up: the request goes on as a miss
    store_timeout_s: float = 1.0
    verify: CacheVerifyConfig = msgspec.field(default_factory=CacheVerifyConfig)

    def __post_init__(self) -> None:
        if self.store_timeout_s <= 0:
            raise ValueError("cache.store_timeout_s must be > 0")
        if not (self.store == "memory" or "://" in self.store):
            raise ValueError(f"cache.store must be 'memory' or a store URL (redis://...), not {self.store!r}")
        if not 0 < self.delta < 1:
            raise ValueError("cache.delta must be within 0..1")
        if self.max_bytes < 16 << 20 or self.max_entries < 1:
            raise ValueError("cache.max_bytes must be >= 16 MB (16777216) and cache.max_entries >= 1")


class ShadowConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Shadow sampling: a share of routed requests is also answered, after the client has its answer, by
    another pool model; a judge model scores both answers, giving outcomes for the model not chosen."""

    share: float = 0.0  # of routed requests (0 = off)
    judge: str | None = None  # the pool model that scores both answers (required when share > 0)
    models: list[str] | None = None  # the shadow answers come from these; None = any other eligible pool model
    budget_usd_per_day: float = 1.0  # shadow and judge calls stop for the day once they cost this much

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError("learning.shadow.share must be within 0..1")
        if self.share > 0 and not self.judge:
            raise ValueError("learning.shadow.share > 0 needs learning.shadow.judge: the pool model that scores both answers")
        if self.budget_usd_per_day < 0:
            raise ValueError("learning.shadow.budget_usd_per_day must be >= 0")


class LearningConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The learning loop (README, "Learning from your traffic"): feedback, shadow answers, promoted routers."""

    # store the routing text of each routed request with its ledger row, so that feedback and shadow answers can
    # train a router (`pointsman train --from-ledger`); off by default: it keeps prompt text on disk
    store_prompts: bool = False
    retention_days: float = 30.0  # stored prompts, feedback and shadow rows older than this are deleted
    # where `pointsman promote` puts the deployed router and its history; a policy's `router: deployed` reads it
    routers_dir: str = "pointsman-routers"
    reload_check_s: float = 5.0  # how often the gateway looks for a newly promoted router (0 = never)
    shadow: ShadowConfig = msgspec.field(default_factory=ShadowConfig)
    # `pointsman drift` says "retrain" past either: the share of recent prompts unlike any training prompt,
    # or the total-variation distance between the recent and the training task mix
    drift_unseen_share: float = 0.3
    drift_task_shift: float = 0.2

    def __post_init__(self) -> None:
        if self.retention_days <= 0:
            raise ValueError("learning.retention_days must be > 0")
        if self.reload_check_s < 0:
            raise ValueError("learning.reload_check_s must be >= 0")
        for name in ("drift_unseen_share", "drift_task_shift"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"learning.{name} must be within 0..1")


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Virtual keys' look-up, budgets and rate limits (README, "Virtual keys, budgets and limits"); the keys and
    limits themselves live in the ledger's database, set with the admin API or `pointsman keys` / `budgets`."""

    store: str = "memory"  # the counters: "memory" (this process) or a redis:// URL shared by every replica
    prefix: str = "pointsman:limits"  # Redis key prefix
    on_store_error: Literal["closed", "open"] = "closed"  # Redis down: refuse (503) or serve unchecked
    store_timeout_s: float = 0.5  # a reserve or settle that takes longer counts as the store being down
    store_connections: int = 16  # Redis connections per replica; a burst of requests queues for them
    reservation_timeout_s: float = 600.0  # a reservation never settled (a replica died) is taken back after this
    default_max_tokens: int = 4096  # the output assumed for the worst case when a request sets no max_tokens
    keys_refresh_s: float = 1.0  # how often replicas read changed keys and limits: the bound on a revocation

    def __post_init__(self) -> None:
        if not (self.store == "memory" or "://" in self.store):
            raise ValueError(f"limits.store must be 'memory' or a redis:// URL, not {self.store!r}")
        if min(self.store_timeout_s, self.reservation_timeout_s) <= 0 or self.keys_refresh_s < 0:
            raise ValueError("limits: store_timeout_s and reservation_timeout_s must be > 0, keys_refresh_s >= 0")
        if self.default_max_tokens < 1:
            raise ValueError("limits.default_max_tokens must be >= 1")
        if self.store_connections < 1:
            raise ValueError("limits.store_connections must be >= 1")


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 4000
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout_s: float = 10.0  # a request's headers must arrive within this (slowloris)
    # Client keys accepted by the gateway, as environment-variable names; empty = no auth.
    api_keys_env: list[str] = msgspec.field(default_factory=list)
    admin_key_env: str | None = None
    ledger_url: str = "sqlite:///pointsman.db"
    ledger_flush_interval_s: float = 0.5
    ledger_batch_size: int = 512
    responses_retention_days: float = 30.0  # stored Responses API conversations (store: true) are deleted after this
    cooldown_failures: int = 3  # consecutive failures that put a model in cooldown
    cooldown_s: float = 30.0
    max_retry_after_s: float = 10.0  # a longer Retry-After falls back instead of waiting
    retry_backoff_s: float = 0.25  # first retry waits up to this (full jitter), doubling per retry
    retry_backoff_cap_s: float = 4.0
    default_policy: str = "auto"
    log_requests: bool = False  # one console line per chat request (time, model, tier, status, latency, cost)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)


class Config(msgspec.Struct, forbid_unknown_fields=True):
    models: list[ModelConfig]
    policies: dict[str, Policy] = msgspec.field(default_factory=dict)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    learning: LearningConfig = msgspec.field(default_factory=LearningConfig)
    guards: GuardsConfig = msgspec.field(default_factory=GuardsConfig)  # README, "Guards and compliance"
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)  # README, "Visibility"
