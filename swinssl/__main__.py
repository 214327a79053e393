"""Allows ``python -m swinssl`` and ``torchrun -m swinssl``."""

from swinssl.cli import main

raise SystemExit(main())
