"""`python -m vaecli` is the same program as `vae`."""

import sys

from vaecli.cli import main

if __name__ == "__main__":
    sys.exit(main())
