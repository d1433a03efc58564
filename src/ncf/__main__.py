"""``python -m ncf`` runs the command line (also what torchrun launches)."""

from ncf.cli import main

raise SystemExit(main())
