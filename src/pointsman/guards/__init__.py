"""Guards: prompt injection (injection.py, detector.py, rules.py), personal data (pii.py) and compliance
constraints (compliance.py), each a stage of the request path (base.py: the contract; chain.py: built from
the config's ``guards:`` section, config.py)."""
