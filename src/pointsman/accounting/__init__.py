"""Accounting: what calls cost (prices.py) and where the money went (reports.py, api.py, cli.py)."""
