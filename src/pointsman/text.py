"""Reading chat messages and answers as text, one way for every stage.

* :func:`text_of`: the text of a message's content, a string or a list of OpenAI content parts (only the
  text parts; images and audio have no text).
* :func:`is_refusal`: does an answer open by declining? The cache does not store such an answer and the
  cascade escalates it; only the opening is read, so a caveat later in an answer is not a refusal.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["text_of", "is_refusal"]


def text_of(content: Any, sep: str = "") -> str:
    """The text parts of ``content`` joined by ``sep`` ("" as a provider reads them, " " for routing features)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(p["text"] for p in content
                        if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str))
    return ""


# Two ways an answer declines, as the cache and the cascade each recognised one before they shared this (a
# refusal for either is a refusal for both): an apology or "as an AI" leading into "I can't / won't / am unable
# to <help...>" at the very start, and the same phrases anywhere in the opening.
_REFUSALS = (
    re.compile(
        r"^\W*(?:i'?m sorry|i am sorry|sorry|i apologi[sz]e|unfortunately|as an ai(?: language model)?)?[,.!\s]*"
        r"(?:but\s+)?(?:i|we)\s*(?:can(?:no|')?t|cannot|am unable to|'?m unable to|am not able to|'?m not able to|won'?t|"
        r"must decline to|will not|do not feel comfortable)\s+"
        r"(?:help|assist|provide|comply|answer|do that|fulfil|fulfill|create|write|generate|support|engage|share|discuss)",
        re.IGNORECASE),
    re.compile(
        r"^\W*(?:i'?m\s+(?:really\s+|very\s+)?sorry,?\s+(?:but\s+)?(?:i|as an ai)|i\s+(?:cannot|can(?:'|no)t|won'?t|"
        r"am\s+(?:not\s+able|unable))\s+(?:help|assist|provide|comply|do\s+that|fulfil|create|generate|answer|share|"
        r"support|engage)|i\s+(?:must|have\s+to)\s+(?:decline|refuse)|as\s+an\s+ai(?:\s+language\s+model)?,?\s+i\s+"
        r"(?:cannot|can'?t|am\s+not|don'?t)|(?:sorry|unfortunately),?\s+(?:but\s+)?i\s+(?:cannot|can'?t|won'?t|am\s+unable|"
        r"'m\s+unable)|i\s+apologi[sz]e,?\s+but\s+i\s+(?:cannot|can'?t|won'?t|am\s+unable))",
        re.IGNORECASE),
)


def is_refusal(text: str | None) -> bool:
    """Does the answer open by declining ("I'm sorry, but I can't help with that.")? The first 300 characters."""
    if not text:
        return False
    opening = text[:300].replace("\u2019", "'")
    return any(pattern.search(opening) is not None for pattern in _REFUSALS)
