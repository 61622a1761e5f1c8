"""``python -m pg_runbook_exporter``: the command line."""

from pg_runbook_exporter.cli import main

main()
