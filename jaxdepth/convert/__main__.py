"""``python -m jaxdepth.convert``: the convert command line (`jaxdepth.cli.convert`; also ``jaxdepth-convert``)."""
import sys

from ..cli.convert import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
