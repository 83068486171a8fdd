"""`python -m modelc ...` is the `modelc` command."""
import sys

from modelc.entry import main

sys.exit(main())
