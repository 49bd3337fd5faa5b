"""CTA and bonus-ranking candidates, their metrics and offline policy evaluation.

Returns fitted candidates with their evidence; recording them in MLflow is
``pipeline.record``'s job. May import ``features`` only (ARCHITECTURE.md).
"""
