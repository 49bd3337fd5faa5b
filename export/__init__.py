"""ONNX export, quantization, mobile packaging and parity gates of every candidate.

Arrives with the export issue; may import ``features`` and ``models`` (ARCHITECTURE.md).
"""
