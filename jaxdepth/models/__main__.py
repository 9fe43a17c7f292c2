"""``python -m jaxdepth.models``: the models command line (`jaxdepth.cli.models`; also ``jaxdepth-models``)."""
import sys

from ..cli.models import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
