"""A test upstream that speaks the OpenAI (and Anthropic) protocol with controllable latency and faults.

It stands where a provider's network would be. What it does is chosen by the upstream model id the
gateway sends (e.g. `echo`, `slow:200`, `status:503:2`, `reset`), or scripted per model through
`POST /_control/script`, so a test can say "fail twice, then answer". See `behaviours.py`.
"""
