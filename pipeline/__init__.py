"""The ``carryon`` CLI, the params loader, progress display and everything MLflow: wires the stages."""
