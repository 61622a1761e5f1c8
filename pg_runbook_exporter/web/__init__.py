"""The HTTP side: server, connections, the exporter-toolkit web config; nothing of PostgreSQL."""
