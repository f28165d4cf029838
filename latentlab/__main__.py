"""``python -m latentlab ...`` (and ``torchrun ... -m latentlab train ... --distributed``): the latentlab command."""

import sys

from latentlab.cli import main

sys.exit(main())
