"""``python -m iochost.reference [--check] [DIR]``: write (or check) every generated page."""

import sys

from iochost.reference import main

sys.exit(main())
