from pg_runbook_exporter.cli import main

main()
