"""CTA and bonus-ranking candidates, their offline evaluation and MLflow registration.

Arrives with the models issue; may import ``features`` only (ARCHITECTURE.md).
"""
