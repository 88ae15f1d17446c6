"""The rule layer of the injection detector: known attack phrasings, as regular expressions.

A rule that matches makes the score 1.0 whatever the trained head says, so a rule must be specific enough never
to fire on ordinary text: "ignore the previous paragraph" or "act as a tour guide" must pass, "ignore all
previous instructions" must not. bench/guards measures the rules alone as the baseline and the over-defence set
(benign prompts with trigger words) keeps them honest.
"""

from __future__ import annotations

import re

__all__ = ["RULES", "match_rule"]

_PRIOR = r"(?:all\s+|any\s+|the\s+|your\s+|my\s+|of\s+|these\s+|those\s+)*(?:previous|prior|above|earlier|preceding|original|initial|former|existing|system|safety|current)?\s*"
_ORDERS = r"(?:instructions?|directives?|guidelines|rules|prompts?|programming|restrictions|constraints|guardrails|policies|filters)"

RULES: dict[str, str] = {
    "override": rf"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|discard)\s+{_PRIOR}{_ORDERS}\b",
    "new-orders": r"\b(?:new|updated|real|actual)\s+(?:system\s+)?instructions?\s*:|\bsystem\s+override\b|\badmin(?:istrator)?\s+override\b",
    "prompt-leak": r"\b(?:reveal|show|print|display|output|repeat|leak|dump|expose|recite)\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|exact\s+)?(?:system|initial|hidden|original|secret|internal)\s+(?:prompt|instructions|message|configuration)\b",
    "dan": r"(?-i:\bDAN\b)|\bdo\s+anything\s+now\b|\bdeveloper\s+mode\b|\bjailbr(?:eak|oken)\s+mode\b|\bgod\s+mode\b",
    "unrestricted": r"\b(?:you\s+are|you're|act\s+as|pretend\s+(?:to\s+be|you\s+are|you're)|become)\s+(?:now\s+)?(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|unaligned|amoral)\b",
    "no-limits": r"\b(?:without|free\s+(?:of|from)|no\s+longer\s+(?:bound|restricted)\s+by)\s+(?:any\s+)?(?:ethical\s+|moral\s+|safety\s+|content\s+)?(?:restrictions|guidelines|filters|limitations|guardrails)\b",
    "chat-markup": r"<\|im_start\|>\s*system|<\|system\|>|\[\s*/?\s*INST\s*\]|<<\s*SYS\s*>>|^\s*#{2,}\s*(?:system|instruction)s?\s*:?\s*$",
    # the multilingual positives' commonest openings (de, fr, es, it, pt)
    "override-i18n": r"\b(?:ignorier(?:e|en)|vergiss)\s+(?:alle\s+)?(?:vorherigen|bisherigen|obigen)?\s*(?:anweisungen|regeln|instruktionen)"
                     r"|\bignor(?:e|ez)\s+(?:toutes\s+)?(?:les\s+)?(?:instructions|consignes|règles)\s+(?:précédentes|antérieures)"
                     r"|\bignora\s+(?:todas\s+)?(?:las\s+|le\s+)?(?:instrucciones|istruzioni|reglas|regole)\s+(?:anteriores|precedenti)"
                     r"|\bignore\s+(?:todas\s+)?(?:as\s+)?instruções\s+anteriores",
}

_COMPILED = [(name, re.compile(pattern, re.IGNORECASE | re.MULTILINE)) for name, pattern in RULES.items()]


def match_rule(text: str) -> str | None:
    """The name of the first rule ``text`` matches, or None."""
    for name, pattern in _COMPILED:
        if pattern.search(text):
            return name
    return None
