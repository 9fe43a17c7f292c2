"""The command-line tools: one module per tool (``build_parser()`` + ``main(argv) -> int``), all run through
`jaxdepth.cli.common.run` (shared options, one-line errors with exit 2, Ctrl-C summaries, compile cache).
Installed as ``jaxdepth-<tool>``; ``python -m jaxdepth.<tool>`` reaches the same ``main``. Library code never
imports from here."""
