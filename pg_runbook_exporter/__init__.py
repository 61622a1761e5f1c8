"""pg-runbook-exporter: the portal database runbook's checks as Prometheus metrics."""

__version__ = "0.1.0"
