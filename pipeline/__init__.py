"""The ``carryon`` CLI, the params loader and progress display: wires the stages."""
