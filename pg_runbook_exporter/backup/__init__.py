"""Backups of the portal database: dump files, their verification by restore, and its record."""
