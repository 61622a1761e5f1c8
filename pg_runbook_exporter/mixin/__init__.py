"""The generators `generate` runs: alert rules, dashboards, docs; never imported when serving."""
