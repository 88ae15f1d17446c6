"""The PII guard: personal data and secrets found by presidio-analyzer's pattern recognizers (no NLP model).

E-mail addresses, phone numbers, card numbers (Luhn checksum), IBANs (checksum), IP addresses, national ids
(US SSN, UK NINO, Spanish NIF, Italian fiscal code, Polish PESEL) and API keys and secrets (patterns of the
common providers' key formats, private-key blocks, JWTs, ``api_key=...`` assignments); street addresses
(``ADDRESS``, guards/address.py) when the config lists them. Person names are not detected: no model that ships
offline fits the stage's latency (bench/guards/PII_NAMES.md).

Every value found gets a placeholder (``<EMAIL_ADDRESS_1>``, the same for every occurrence of a value). Whatever
the action, a request with PII:
* skips the cache (looked up and stored by its text) and shadow sampling (its text would go to more models);
* is written with placeholders only: the ledger row (error, stored prompt), error messages, log lines;
* ``flag``: header and ledger; ``redact``: the upstream gets the placeholders unless every model it may reach is
  tagged ``pii_tag`` (fallbacks that are not are dropped when the routed model is), and with ``restore`` the
  answer's placeholders are put back for the client; ``block``: a 400 ``pii_detected`` naming the kinds found.
``require_tags`` makes PII a routing signal: only models carrying those tags stay eligible.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import orjson

from pointsman.errors import GatewayError
from pointsman.guards.address import find_addresses
from pointsman.guards.base import check_allowed, select
from pointsman.guards.config import PiiConfig
from pointsman.text import text_of

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange
    from pointsman.gateway.pool import Pool

__all__ = ["PiiGuard", "PiiScanner", "Redaction", "SECRET_PATTERNS"]

# (name, pattern, score): provider key formats and generic secret assignments
SECRET_PATTERNS = [
    ("openai-style key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}", 0.9),
    ("aws access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0.9),
    ("github token", r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", 0.9),
    ("slack token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}", 0.9),
    ("google api key", r"\bAIza[0-9A-Za-z_\-]{35}\b", 0.9),
    ("private key", r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP )?PRIVATE KEY-----", 0.9),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", 0.8),
    ("assigned secret", r"(?i)(?<=\b(?:api[_\-]?key|secret|token|password|passwd)[\"']?\s{0,3}[:=]\s{0,3}[\"']?)[^\s\"']{8,}", 0.7),
]
_PLACEHOLDER = re.compile(r"<([A-Z_]+)_(\d+)>")

# Phone numbers: presidio's PhoneRecognizer (libphonenumber) scores every valid number 0.4 and raises it only through
# context words read by an NLP model, which this stage does not load; so context and format are read here instead.
# Words that name a phone number, in the languages of the recognizer's regions, within a few words of the number:
PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|telephone|tel|cell|cellphone|mobile|call|calls|called|calling|ring|dial|fax|sms|text|texts|"
    r"whatsapp|signal|contact|reach|number|hotline|helpline|telefon|telefonnummer|handy|ruf|anrufen|"
    r"t[ée]l[ée]phone|portable|appel(?:er|ez)?|num[ée]ro|tel[ée]fono|celular|llam[ae]r?|chiama(?:re|mi)?|cellulare|"
    r"numero)\b")
PHONE_CONTEXT_CHARS = 40  # how far before the number (and half that after) a context word counts
# A number written as one is written (a leading +, an area code in parentheses, or digit groups split by a space,
# dot or dash: "415-555-2671", "020 7946 0958") is a phone number without context; bare digits ("1234567890",
# an order number) need a context word.
PHONE_FORMATTED = re.compile(r"^\+|\(\d|\d[ .\-]\d+[ .\-]\d")
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?!\d)")
PHONE_FORMAT_BOOST, PHONE_CONTEXT_BOOST = 0.2, 0.35  # over presidio's 0.4: 0.6, 0.75, 0.95 with both


def _phone_recognizer() -> Any:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class ContextPhoneRecognizer(PhoneRecognizer):
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            results = super().analyze(text, entities, nlp_artifacts)
            for result in results:
                value = text[result.start:result.end]
                if _DOTTED_QUAD.match(value):
                    continue  # an IP address (or a network), which libphonenumber reads as a dotted number
                around = text[max(0, result.start - PHONE_CONTEXT_CHARS):result.start] + " " + \
                    text[result.end:result.end + PHONE_CONTEXT_CHARS // 2]
                boost = (PHONE_FORMAT_BOOST if PHONE_FORMATTED.search(value) else 0.0) + \
                    (PHONE_CONTEXT_BOOST if PHONE_CONTEXT.search(around) else 0.0)
                result.score = min(1.0, result.score + boost)
            return results

    return ContextPhoneRecognizer()


def _recognizers(entities: list[str]) -> list[Any]:
    """presidio's pattern recognizers for ``entities`` (imported here: presidio loads spaCy's code, ~1 s, once)."""
    import tldextract
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer, EmailRecognizer, EsNifRecognizer, IbanRecognizer, IpRecognizer, ItFiscalCodeRecognizer,
        PlPeselRecognizer, UkNinoRecognizer, UsSsnRecognizer)

    # the e-mail check reads the public suffix list: the snapshot shipped with tldextract, never the network
    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline(pattern_text).fqdn != ""

    secrets = PatternRecognizer(supported_entity="API_KEY", name="SecretsRecognizer",
                                patterns=[Pattern(name, regex, score) for name, regex, score in SECRET_PATTERNS])
    known: dict[str, Callable[[], Any]] = {
        "EMAIL_ADDRESS": OfflineEmailRecognizer, "PHONE_NUMBER": _phone_recognizer, "CREDIT_CARD": CreditCardRecognizer,
        "IBAN_CODE": IbanRecognizer, "IP_ADDRESS": IpRecognizer, "US_SSN": UsSsnRecognizer, "UK_NINO": UkNinoRecognizer,
        "ES_NIF": EsNifRecognizer, "IT_FISCAL_CODE": ItFiscalCodeRecognizer, "PL_PESEL": PlPeselRecognizer,
        "API_KEY": lambda: secrets, "ADDRESS": AddressRecognizer}
    unknown = sorted(set(entities) - set(known))
    if unknown:
        raise ValueError(f"guards.pii.entities: no recognizer for {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[name]() for name in entities]


class AddressRecognizer:
    """``ADDRESS``: street addresses (guards/address.py), shaped as presidio's recognizers for the scanner."""

    supported_entities = ["ADDRESS"]
    score = 0.7

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any) -> list[Any]:
        from presidio_analyzer import RecognizerResult

        return [RecognizerResult("ADDRESS", start, end, self.score) for start, end in find_addresses(text)]


class PiiScanner:
    """Finds the values of the configured kinds in texts. Thread-safe (presidio's recognizers keep no state)."""

    def __init__(self, entities: list[str], min_score: float) -> None:
        self.entities = entities
        self.min_score = min_score
        self._recognizers = _recognizers(entities)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(kind, value) of each match, longest first where two overlap."""
        found: list[tuple[int, int, str]] = []
        for recognizer in self._recognizers:
            for result in recognizer.analyze(text, recognizer.supported_entities, None):
                if result.score >= self.min_score and result.entity_type in self.entities:
                    found.append((result.start, result.end, result.entity_type))
        found.sort(key=lambda item: (item[0], -(item[1] - item[0])))
        kept: list[tuple[str, str]] = []
        end = -1
        for start, stop, kind in found:
            if start >= end:  # overlaps (a card number read as a phone number too) keep the first, longest match
                kept.append((kind, text[start:stop]))
                end = stop
        return kept


@dataclass(slots=True)
class Redaction:
    """The values of one request and their placeholders."""

    placeholders: dict[str, str]  # value -> placeholder
    kinds: Counter[str]

    @classmethod
    def of(cls, found: list[tuple[str, str]]) -> "Redaction":
        placeholders: dict[str, str] = {}
        numbers: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        for kind, value in found:
            kinds[kind] += 1
            if value not in placeholders:
                numbers[kind] += 1
                placeholders[value] = f"<{kind}_{numbers[kind]}>"
        # longest first: a value inside another (an e-mail's domain is not one, but an IP inside a URL may be)
        return cls(dict(sorted(placeholders.items(), key=lambda kv: -len(kv[0]))), kinds)

    def scrub(self, text: str) -> str:
        for value, placeholder in self.placeholders.items():
            if value in text:
                text = text.replace(value, placeholder)
        return text

    def summary(self) -> str:
        return ",".join(f"{kind}:{n}" for kind, n in sorted(self.kinds.items()))

    def redact_messages(self, messages: list[Any]) -> list[Any]:
        """A copy of the messages with every value replaced (string contents and text parts)."""
        out = []
        for message in messages:
            if not isinstance(message, dict):
                out.append(message)
                continue
            content = message.get("content")
            if isinstance(content, str):
                message = {**message, "content": self.scrub(content)}
            elif isinstance(content, list):
                message = {**message, "content": [{**p, "text": self.scrub(p["text"])} if isinstance(p, dict)
                                                  and isinstance(p.get("text"), str) else p for p in content]}
            out.append(message)
        return out

    def restorer(self) -> "Restorer":
        return Restorer({placeholder: value for value, placeholder in self.placeholders.items()})


class Restorer:
    """Puts values back into an answer in place of their placeholders: a JSON body at once; an SSE stream
    chunk by chunk, holding back a tail that may be the start of a placeholder cut between two chunks."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self._json = {p.encode(): orjson.dumps(v)[1:-1] for p, v in values.items()}  # as a JSON string carries it
        self._held: dict[int, str] = {}  # per choice index: text held back
        self._last: dict[str, Any] | None = None  # the last chunk seen (its shape for a flushed tail)

    def _text(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.values.get(m.group(0), m.group(0)), text)

    def __call__(self, body: bytes, more: bool) -> bytes:
        if not body.startswith((b"data:", b":")) and not self._held and not more and self._last is None:
            for placeholder, value in self._json.items():  # a whole JSON answer
                body = body.replace(placeholder, value)
            return body
        return self._events(body, more)

    def _events(self, body: bytes, more: bool) -> bytes:
        out = []
        for event in body.split(b"\n\n"):
            if event.startswith(b"data: {"):
                chunk = orjson.loads(event[6:])
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                        delta["content"] = self._feed(int(choice.get("index") or 0), delta["content"])
                self._last = chunk
                event = b"data: " + orjson.dumps(chunk)
            elif event.startswith(b"data: [DONE]") or (not more and event.startswith(b":")):
                tail = self._flush()
                if tail:
                    out.append(tail)
            out.append(event)
        return b"\n\n".join(out)

    def _feed(self, index: int, text: str) -> str:
        text = self._held.pop(index, "") + text
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and re.fullmatch(r"<[A-Z_0-9]{0,40}", text[cut:]):
            self._held[index] = text[cut:]  # maybe a placeholder cut in two: wait for its end
            text = text[:cut]
        return self._text(text)

    def _flush(self) -> bytes:
        if not self._held or self._last is None:
            return b""
        held, self._held = self._held, {}
        chunk = {k: v for k, v in self._last.items() if k != "usage"}
        chunk["choices"] = [{"index": i, "delta": {"content": self._text(t)}, "finish_reason": None} for i, t in held.items()]
        return b"data: " + orjson.dumps(chunk)


class PiiGuard:
    name = "pii"

    def __init__(self, config: PiiConfig, pool: "Pool", policy_of: Callable[[str], str | None]) -> None:
        self.config = config
        self.pool = pool
        self.policy_of = policy_of
        self.scanner = PiiScanner(config.entities, config.min_score)

    def action(self, ex: "Exchange") -> tuple[str, bool]:
        override = select(self.config.overrides, self.policy_of(ex.request.model), ex.record.team, ex.record.key_id)
        action = (override.action if override is not None and override.action else None) or self.config.action
        restore = override.restore if override is not None and override.restore is not None else self.config.restore
        return action, restore

    def scan(self, messages: list[Any]) -> Redaction | None:
        found: list[tuple[str, str]] = []
        for message in messages:
            if isinstance(message, dict):
                text = text_of(message.get("content"), "\n")
                if text:
                    found.extend(self.scanner.find(text))
        return Redaction.of(found) if found else None

    async def __call__(self, ex: "Exchange") -> bool:
        """Before the cache: find, then block, or note and mark the request sensitive."""
        assert ex.ctx is not None and ex.raw is not None
        action, _ = self.action(ex)
        if action == "off":
            return False
        redaction = self.scan(ex.ctx.messages)
        if redaction is None:
            return False
        ex.guard.scrubbers.append(redaction.scrub)
        ex.ctx.sensitive = True
        ex.guard.notes.append(f"pii {redaction.summary()} {action}")
        if action == "block":
            raise GatewayError(400, f"the request carries personal data or secrets ({', '.join(sorted(redaction.kinds))}); "
                                    "this gateway's policy refuses such requests", code="pii_detected")
        if self.config.require_tags:  # the routing signal: PII goes only to models carrying these tags
            ex.ctx.restrict({m for m in self.pool.entries if all(
                self.pool[m].config.tags.get(tag) in values for tag, values in self.config.require_tags.items())},
                "pii present: " + ", ".join(f"{t} in {{{', '.join(v)}}}" for t, v in self.config.require_tags.items()))
            check_allowed(ex.ctx, ex.request.model, self.pool)
        if action == "redact":
            ex.guard.data["pii"] = redaction
        return False

    def pii_ok(self, model: str) -> bool:
        return self.pool[model].config.tags.get(self.config.pii_tag, "").lower() in ("yes", "true", "1")

    async def upstream(self, ex: "Exchange") -> bool:
        """After routing (action redact): the values go only to models tagged pii_ok; else placeholders go."""
        redaction: Redaction | None = ex.guard.data.get("pii")
        decision = ex.decision
        if redaction is None or decision is None or ex.raw is None:
            return False
        ladder = list(decision.cascade.ladder) if decision.cascade is not None else []
        if self.pii_ok(decision.model) and all(self.pii_ok(m) for m in ladder):
            decision.fallbacks = [m for m in decision.fallbacks if self.pii_ok(m)]
            return False
        ex.raw["messages"] = redaction.redact_messages(ex.raw["messages"])
        ex.guard.notes[-1] = ex.guard.notes[-1] + f" (to {decision.model})"
        if self.action(ex)[1]:
            ex.guard.body_filters.append(redaction.restorer())
        return False
