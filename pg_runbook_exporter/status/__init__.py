"""The status page, its JSON twin and the playbooks, rendered from the checks' snapshots."""
