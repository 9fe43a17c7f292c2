"""``python -m jaxdepth.multipliers``: the multipliers command line (`jaxdepth.cli.multipliers`)."""
import sys

from ..cli.multipliers import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
