"""`python -m pyinfer.cli ARGS`: the same as the `pyinfer` console script."""
import sys

from . import main

sys.exit(main())
