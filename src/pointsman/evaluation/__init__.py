"""Offline evaluation: outcome-data readers, routing metrics and baselines.

Nothing here is imported on the gateway's hot path.
"""
