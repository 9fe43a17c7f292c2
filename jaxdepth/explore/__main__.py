"""``python -m jaxdepth.explore``: the exploration command line (`jaxdepth.cli.explore`; also ``jaxdepth-explore``)."""
from ..cli.explore import main

if __name__ == "__main__":
    raise SystemExit(main())
