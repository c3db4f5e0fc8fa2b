"""Reproduce a paper table (``make reproduce``): a thin shell over ``python -m temde.reproduce`` (docs/reproduce.md)."""

import sys

from temde.reproduce.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
