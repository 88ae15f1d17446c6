"""One reading of messages and answers for every stage (pointsman.text): the cache and the cascade agree on what
a refusal is, routing and providers on what a message's text is."""

from __future__ import annotations

import pytest

from pointsman.cache.answers import uncacheable_reason
from pointsman.cascade.validators import is_refusal as cascade_refusal
from pointsman.text import is_refusal, text_of


@pytest.mark.parametrize("answer, refused", [
    ("I'm sorry, but I can't help with that.", True),
    ("As an AI, I don't have personal opinions on elections.", True),  # was a refusal for the cache only
    ("Unfortunately, we cannot provide medical advice.", True),  # was a refusal for the cascade only
    ("Sure! Here is the answer. I can't stress enough how useful this is.", False),
    ("", False),
])
def test_the_cache_and_the_cascade_agree_on_refusals(answer, refused):
    assert is_refusal(answer) is refused and cascade_refusal(answer) is refused
    reason = uncacheable_reason({"choices": [{"message": {"role": "assistant", "content": answer},
                                              "finish_reason": "stop"}]})
    assert (reason is not None and "refus" in reason) is refused or not answer


def test_text_of_reads_text_parts_only():
    parts = [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "there"}]
    assert text_of(parts) == "hellothere" and text_of(parts, " ") == "hello there"
    assert text_of("plain") == "plain" and text_of(None) == "" and text_of(42) == ""
