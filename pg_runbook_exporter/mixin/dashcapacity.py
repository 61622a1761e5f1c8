"""Rows of the detail boards about what runs out or runs now: the data volume (node_exporter),
temporary files and logs, maintenance in progress, invalid indexes, sequences, pending restarts.

The data-volume panels read node_exporter's series, selected by its job and the data volume's
mountpoint (``generate --mixin.node-job``, ``--mixin.node-mountpoint``): node_exporter's
``instance`` is its own host:port, so they are not narrowed by the board's ``$instance``
(docs/alerts/README.md ties the two).
"""

from __future__ import annotations

from pg_runbook_exporter.mixin.dashpanels import (
    ANY,
    INFO,
    OK,
    RATE,
    WARN,
    Metrics,
    Query,
    Row,
    Step,
    ago,
    human,
    stat,
    table,
    timeseries,
)

# node_exporter's metrics the boards and rules read (they are not the exporter's)
NODE_METRICS = ("node_filesystem_avail_bytes", "node_filesystem_size_bytes")
VOLUME = "{{instance}} {{mountpoint}}"
SEQUENCE = "{{schemaname}}.{{sequencename}} → {{relname}}.{{attname}}"
RUNNING = "{{command}} {{schemaname}}.{{relname}} (pid {{pid}})"
DISK_ALERT = "PostgresDiskSpaceLow"


def volume_rows(m: Metrics) -> tuple[Row, ...]:
    """The data volume (``m.node``: generate's --mixin.node-job and --mixin.node-mountpoint)."""
    node = m.node
    avail, size = (f"{name}{{{node}}}" for name in NODE_METRICS)
    horizon = m.number("disk_full_forecast_seconds")
    ahead = human(m.setting("disk_full_forecast_seconds"), "s")
    empty = f"node_exporter's series ({node}) are not scraped"
    volume = (
        timeseries("Data volume free space", (Query(f"{avail} / {size}", VOLUME),),
                   unit="percentunit", width=8, empty=empty, alerts=(DISK_ALERT,),
                   steps=(Step("orange"), Step("green", m.setting("disk_free_warning_ratio"),
                                               "disk_free_warning_ratio")),
                   what="Free space of the volume holding the data directory, as node_exporter "
                        "sees it (PostgreSQL cannot); orange below disk_free_warning_ratio.",
                   runbook='"Disk Space Full" › "Check disk usage"'),
        timeseries(f"Data volume free space in {ahead} (forecast)",
                   (Query(f"predict_linear({avail}[6h], {horizon})", VOLUME),), unit="bytes",
                   width=8, empty=empty, steps=(Step("red"), Step("green", 0.0)),
                   alerts=(DISK_ALERT,),
                   what="Free space disk_full_forecast_seconds ahead at the rate of the last 6 "
                        "hours; red below zero: the volume fills up before then.",
                   runbook='"Disk Space Full"'),
        timeseries("Data volume size and free bytes",
                   (Query(avail, f"free {VOLUME}"), Query(size, f"size {VOLUME}")), unit="bytes",
                   width=8, empty=empty, what="node_filesystem_avail_bytes (what an unprivileged "
                   "process may still write) and the volume's size.", runbook='"Disk Space Full"'),
    )  # fmt: skip
    temp = (
        timeseries("Temporary bytes written per second",
                   (Query(f"rate({m.sel('database_temp_bytes_total', db=True)}{RATE})",
                          "{{datname}}"),), unit="bytes", width=6,
                   what="Bytes queries wrote to temporary files (sorts and hashes over work_mem).",
                   runbook='"Query Performance"'),
        timeseries("Temporary files created per second",
                   (Query(f"rate({m.sel('database_temp_files_total', db=True)}{RATE})",
                          "{{datname}}"),), unit="cps", width=6,
                   what="Temporary files created by queries, per database.",
                   runbook='"Query Performance"'),
        timeseries("Temporary files on disk now",
                   (Query(m.sel("temp_files_in_use_bytes"), "{{spcname}}"),), unit="bytes",
                   width=6, what="Size of each tablespace's pgsql_tmp now (pg_ls_tmpdir()).",
                   runbook='"Disk Space Full"'),
        timeseries("Server log directory", (Query(m.sel("log_directory_size_bytes"), "logs"),),
                   unit="bytes", width=6, empty="logging_collector is off: the check is skipped",
                   what="Size of log_directory (pg_ls_logdir()), only while the logging "
                        "collector writes it.", runbook='"Disk Space Full"'),
    )  # fmt: skip
    return Row("Data volume (node_exporter)", volume), Row("Temporary files and logs", temp)


def maintenance_rows(m: Metrics) -> tuple[Row, ...]:
    runbook = '"PostgreSQL Maintenance"'
    running = (
        table("Maintenance in progress (now)",
              (ago(m, "maintenance_start_timestamp_seconds"), m.sel("maintenance_progress_ratio"),
               m.sel("maintenance_blocked_sessions")),
              ("running for", "phase progress", "sessions waiting"),
              units=(("running for", "s"), ("phase progress", "percentunit")), width=16,
              empty="no VACUUM, CLUSTER, CREATE INDEX or REINDEX is running", runbook=runbook,
              alerts=("PostgresMaintenanceRunning",),
              what="Commands in pg_stat_progress_vacuum, _cluster and _create_index: backend, "
                   "table, command, phase, the progress of the phase and the sessions waiting "
                   "for its locks."),
        stat("Settings waiting for a restart", Query(m.sel("settings_pending_restart")),
             unit="none", width=8, runbook='"Database Unresponsive" › restart',
             steps=(OK, Step(INFO, ANY)), alerts=("PostgresSettingsPendingRestart",),
             what="Settings changed and reloaded that apply only at the next restart "
                  "(pg_settings.pending_restart)."),
        timeseries("Maintenance commands running",
                   (Query(f"count by (command) ({m.sel('maintenance_running')})", "{{command}}"),),
                   unit="short", width=12, stacked=True, alerts=("PostgresMaintenanceRunning",),
                   empty="no maintenance command is running", runbook=runbook,
                   what="When VACUUM, VACUUM FULL, CLUSTER, CREATE INDEX and REINDEX ran, and how "
                        "many at once (the alert leaves autovacuum out)."),
        timeseries("Sessions waiting for maintenance",
                   (Query(m.sel("maintenance_blocked_sessions"), RUNNING),), unit="short",
                   width=12, empty="no maintenance command is running", runbook='"Lock Monitoring"',
                   alerts=("PostgresLockWait", "PostgresSessionsBlocked"),
                   what="Lock waiters whose pg_blocking_pids() name a maintenance command: the "
                        "lock alerts name it."),
    )  # fmt: skip
    invalid = (
        stat("Invalid indexes", Query(m.or_zero(f"sum({m.sel('invalid_indexes')})",
                                                "invalid_indexes")),
             unit="none", width=6, runbook='"Index Maintenance"', steps=(OK, Step(WARN, ANY)),
             alerts=("PostgresInvalidIndex",),
             what="Indexes left invalid by a failed concurrent build (builds running excluded)."),
        table("Invalid indexes (now)", (m.sel("invalid_indexes"),), ("indexes",), width=18,
              height=8, empty="no index is invalid", runbook='"Index Maintenance"',
              alerts=("PostgresInvalidIndex",),
              what="Each invalid index by schema, table and name (other.other.other counts those "
                   f"past the first {m.number('top_n_invalid_indexes')})."),
    )  # fmt: skip
    sequences = (
        timeseries("Sequences: range used", (Query(m.sel("sequence_used_ratio"), SEQUENCE),),
                   unit="percentunit", width=12, alerts=("PostgresSequenceNearExhaustion",),
                   steps=(OK, m.step(WARN, "sequence_used_warning_ratio")),
                   what="last_value over the smaller of the sequence's and its column's maximum, "
                        f"for the {m.number('top_n_sequences')} fullest.",
                   runbook='"PostgreSQL Maintenance"'),
        table("Fullest sequences (now)",
              (m.sel("sequence_used_ratio"), m.sel("sequence_remaining_values")),
              ("range used", "values left"), units=(("range used", "percentunit"),), width=8,
              height=8, runbook='"PostgreSQL Maintenance"',
              alerts=("PostgresSequenceNearExhaustion",),
              what="The fullest sequences, the column each feeds and the values it has left."),
        stat("Sequences the exporter cannot read",
             Query(m.or_zero(f"sum({m.sel('sequences_unreadable')})", "sequences_unreadable")),
             unit="none", width=4,
             runbook='"PostgreSQL Maintenance"',
             what="Sequences without SELECT for the exporter's role: invisible above. "
                  "`pg-runbook-exporter check` prints the GRANT."),
    )  # fmt: skip
    return (
        Row("Maintenance in progress", running),
        Row("Invalid indexes", invalid),
        Row("Sequences", sequences),
    )
