"""`python -m openrecord` is the `openrecord` command."""

from openrecord.cli import main

raise SystemExit(main())
