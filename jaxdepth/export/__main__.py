"""``python -m jaxdepth.export``: the export command line (`jaxdepth.cli.export`; also ``jaxdepth-export``)."""
from ..cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
