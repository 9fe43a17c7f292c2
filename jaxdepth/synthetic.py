"""``python -m jaxdepth.synthetic``: the synthetic-dataset command line (`jaxdepth.cli.synthetic`; also
``jaxdepth-synthetic`` and ``python -m jaxdepth.data.synthetic``)."""
from .cli.synthetic import build_parser, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
