"""``python -m pocketrec`` runs the command line."""

from pocketrec.cli import main

raise SystemExit(main())
