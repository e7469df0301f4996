"""``python -m fsad_bench`` runs the command line, for environments without the console script."""

from fsad_bench.cli import app

app(prog_name="fsad-bench")
