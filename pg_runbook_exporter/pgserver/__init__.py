"""Throwaway PostgreSQL servers and their binaries, for the demo; never imported when serving."""
