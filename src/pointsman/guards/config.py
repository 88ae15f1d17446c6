"""The `guards:` section of the config (README, "Guards and compliance"): injection, PII, compliance.

Kept beside the guards, not in config/schema.py, which only names the section: a guard's knobs live with it.
Thresholds are knobs here or operating points on a shipped artefact's calibration (a false-positive rate on
its held-out split), never numbers in the code that scores.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["GuardsConfig", "InjectionConfig", "PiiConfig", "ComplianceConfig", "Selector", "InjectionOverride",
           "PiiOverride", "DEFAULT_PII_ENTITIES"]

InjectionAction = Literal["off", "flag", "route", "block"]
PiiAction = Literal["off", "flag", "redact", "block"]

DEFAULT_PII_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN",
                        "UK_NINO", "ES_NIF", "IT_FISCAL_CODE", "PL_PESEL", "API_KEY"]


class Selector(msgspec.Struct, forbid_unknown_fields=True):
    """Whose requests an override applies to; every field given must match (none given: everyone)."""

    policy: str | None = None  # the routing policy the request asked for ("auto" is server.default_policy)
    team: str | None = None
    key: str | None = None  # a key id as the ledger shows it (a hash of a configured key, or a virtual key's id)


class InjectionOverride(Selector, forbid_unknown_fields=True):
    action: InjectionAction | None = None
    route_to: str | None = None
    fpr: float | None = None


class InjectionConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Prompt-injection and jailbreak detection: a rule layer for known attack phrasings plus a trained head on
    the prompt's static embedding and its hashed n-grams (guards/detector.py)."""

    action: InjectionAction = "off"  # what a detection does: flag (header + ledger), route (to route_to), block (400)
    route_to: str | None = None  # the pool model flagged requests go to with action: route
    head: str = "default"  # the shipped detector, or a path to one trained with bench/guards/train.py
    # the operating point: the false-positive rate on the detector's calibration split (its held-out validation
    # split, recorded in the artefact); `threshold` sets the score (0..1) directly instead
    fpr: float = 0.01
    threshold: float | None = None
    # tool results (role tool/function) are scored apart from the user's turns: retrieved text quotes
    # instructions more often than people type them, so it has its own operating point
    indirect: bool = True
    indirect_fpr: float = 0.01
    indirect_threshold: float | None = None
    overrides: list[InjectionOverride] = msgspec.field(default_factory=list)  # first match wins
    # the second stage (MiniLM fine-tuned for the task, guards/second_stage.py): "default" (shipped), a path to
    # one made with bench/guards/finetune.py, or null (the first stage decides alone); with it, fpr and
    # threshold are read on its score. It reads the texts whose first-stage score reaches the gate: the score
    # that `second_stage_recall` of the calibration split's attacks reach (the rest are benign without it)
    second_stage: str | None = "default"
    second_stage_recall: float = 0.995
    # of one long text (read in pieces), at most this many pieces are read twice: those the first stage suspects
    # most (each costs a MiniLM run); the others are not flagged unless a rule matches the text
    second_stage_reads: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.second_stage_recall <= 1:
            raise ValueError("guards.injection.second_stage_recall must be within 0..1 (0 exclusive)")
        if self.second_stage_reads < 1:
            raise ValueError("guards.injection.second_stage_reads must be at least 1 (second_stage: null turns it off)")
        for name in ("fpr", "indirect_fpr"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"guards.injection.{name} must be within 0..1 (exclusive)")
        for name in ("threshold", "indirect_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"guards.injection.{name} must be within 0..1")
        if self.action == "route" and not self.route_to:
            raise ValueError("guards.injection: action route needs route_to, the pool model to route to")
        for item in self.overrides:
            if item.action == "route" and not (item.route_to or self.route_to):
                raise ValueError("guards.injection: action route needs route_to, the pool model to route to")


class PiiOverride(Selector, forbid_unknown_fields=True):
    action: PiiAction | None = None
    restore: bool | None = None


class PiiConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Personal data and secrets in requests (presidio-analyzer's pattern recognizers, no NLP model).

    Whatever the action, a request carrying PII skips the cache and shadow sampling, and what the gateway writes
    (ledger row and stored prompt, error messages, log lines) carries placeholders, never the values."""

    # flag: header + ledger; redact: the upstream too gets placeholders, unless every model of the plan is tagged
    # `pii_tag`; block: 400 pii_detected naming the kinds found (never the values)
    action: PiiAction = "off"
    # the kinds looked for; "ADDRESS" (street addresses, by pattern) is known but not among the defaults
    entities: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_PII_ENTITIES))
    min_score: float = 0.5  # presidio's confidence below which a match is ignored (its phone numbers start at 0.4)
    restore: bool = True  # redact: placeholders in the answer are mapped back to the values for the client
    pii_tag: str = "pii_ok"  # models tagged `pii_ok: "yes"` may receive the values (redact)
    # routing signal: with PII present only models carrying these tags are eligible (e.g. {pii_ok: "yes"})
    require_tags: dict[str, list[str]] = msgspec.field(default_factory=dict)
    overrides: list[PiiOverride] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.min_score <= 1:
            raise ValueError("guards.pii.min_score must be within 0..1")


class ComplianceConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Required model tags, as hard constraints on the pool: `tag: [allowed values]` (a model qualifies when its
    tag has one of them). Every source that applies is enforced (they narrow, never widen)."""

    require: dict[str, list[str]] = msgspec.field(default_factory=dict)  # every request
    teams: dict[str, dict[str, list[str]]] = msgspec.field(default_factory=dict)  # per x-pointsman-team / key's team
    keys: dict[str, dict[str, list[str]]] = msgspec.field(default_factory=dict)  # per key id
    policies: dict[str, dict[str, list[str]]] = msgspec.field(default_factory=dict)  # per routing policy
    # clients may narrow further with `x-pointsman-require: region=eu|ch, dpa=yes` (off by default: with nothing
    # configured the request path has no compliance stage)
    header: bool = False


class GuardsConfig(msgspec.Struct, forbid_unknown_fields=True):
    injection: InjectionConfig = msgspec.field(default_factory=InjectionConfig)
    pii: PiiConfig = msgspec.field(default_factory=PiiConfig)
    compliance: ComplianceConfig = msgspec.field(default_factory=ComplianceConfig)
