"""ONNX export, quantization, mobile packaging, operator allowlist and parity gates.

Device code imports ``export.allowlist`` and ``export.checks``; nothing heavy is imported
here. The DVC stage is ``export.stage.export_versions`` (``carryon export``).
"""
