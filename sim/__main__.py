"""`python -m sim ...`: run one simulation (see sim/cli.py)."""

from sim.cli import main

raise SystemExit(main())
