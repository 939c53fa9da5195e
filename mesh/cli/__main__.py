"""`python -m mesh.cli ...` is `murmur ...` (the demo and the real-process tests start agents so)."""

import sys

from mesh.cli import main

sys.exit(main())
