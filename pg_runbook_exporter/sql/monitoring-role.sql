-- The exporter's own least-privilege role. Run as a superuser (or a role with CREATEROLE that holds
-- pg_monitor WITH ADMIN) connected to the portal database, after the portal's migrations:
--
--   psql -v ON_ERROR_STOP=1 -d portal_production \
--        -v role=pgrb_exporter -v password="$EXPORTER_PASSWORD" \
--        -f pg_runbook_exporter/sql/monitoring-role.sql
--
-- Variables (all optional):
--   role              role name (not pg_…: reserved)     default pgrb_exporter
--   password          login password; unset keeps the current one (or none, for cert/peer auth)
--   schema            schema holding the portal tables    default public
--   connection_limit  sessions the role may open          default 5
--   owner             a role that creates sequences in the schema later (the migration role),
--                     besides those owning its tables and sequences now and the one running this
--
-- Safe to run again: it creates the role only if missing and re-applies every attribute and grant.
-- What it grants and why: docs/checks.md, "The monitoring role".

\if :{?role}
\else
  \set role pgrb_exporter
\endif
\if :{?schema}
\else
  \set schema public
\endif
\if :{?connection_limit}
\else
  \set connection_limit 5
\endif
\if :{?owner}
\else
  \set owner ''
\endif

-- psql does not substitute variables inside dollar-quoted bodies: hand them to the DO blocks below
-- as transaction-local settings.
BEGIN;
\o /dev/null
SELECT set_config('pgrb.role', :'role', true),
       set_config('pgrb.schema', :'schema', true),
       set_config('pgrb.connection_limit', :'connection_limit', true),
       set_config('pgrb.owner', :'owner', true);
\o

DO $$
DECLARE
    r text := current_setting('pgrb.role');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I', r);
    END IF;
    -- LOGIN and nothing else: no superuser, no CREATEDB/CREATEROLE, no replication, no RLS bypass.
    EXECUTE format(
        'ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION'
        ' NOBYPASSRLS CONNECTION LIMIT %s',
        r, current_setting('pgrb.connection_limit')::integer);
END
$$;

\if :{?password}
ALTER ROLE :"role" PASSWORD :'password';
\endif

-- pg_monitor = pg_read_all_settings + pg_read_all_stats + pg_stat_scan_tables, and EXECUTE on
-- pg_ls_waldir() / pg_ls_archive_statusdir(): every statistics view, every session's query state,
-- pg_stat_statements of all roles, archive_command.
GRANT pg_monitor TO :"role";

-- A role can terminate sessions of roles it is a member of; pg_signal_backend would extend that to
-- every non-superuser session, the app's included. Make sure neither applies.
DO $$
DECLARE
    r text := current_setting('pgrb.role');
    g record;
BEGIN
    FOR g IN
        SELECT b.rolname
        FROM pg_auth_members m
        JOIN pg_roles b ON b.oid = m.roleid
        JOIN pg_roles u ON u.oid = m.member
        WHERE u.rolname = r AND b.rolname NOT IN ('pg_monitor')
    LOOP
        EXECUTE format('REVOKE %I FROM %I', g.rolname, r);
    END LOOP;
END
$$;

-- Backstops in case a session forgets its own settings. Read-only is a guard, not a boundary: the
-- role could SET it off again, which is why the grants below are the real limit.
ALTER ROLE :"role" SET default_transaction_read_only = on;
ALTER ROLE :"role" SET statement_timeout = '30s';
ALTER ROLE :"role" SET lock_timeout = '1s';
ALTER ROLE :"role" SET idle_in_transaction_session_timeout = '60s';

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'role') \gexec
GRANT USAGE ON SCHEMA :"schema" TO :"role";

-- Column-level SELECT on exactly the columns the checks read (users.email and every other customer
-- field stay unreadable). Skipped for a table that does not exist yet; run again after migrating.
DO $$
DECLARE
    r text := current_setting('pgrb.role');
    s text := current_setting('pgrb.schema');
    t record;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('users', 'id'),
            ('id_mappings', 'user_id, whmcs_client_id, sf_account_id, created_at'),
            ('_prisma_migrations',
             'finished_at, rolled_back_at, logs, started_at, migration_name, applied_steps_count')
        ) AS v(tbl, cols)
    LOOP
        IF to_regclass(format('%I.%I', s, t.tbl)) IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON %I.%I FROM %I', s, t.tbl, r);
            EXECUTE format('GRANT SELECT (%s) ON %I.%I TO %I', t.cols, s, t.tbl, r);
        ELSE
            RAISE NOTICE 'table %.% does not exist yet: no grant', s, t.tbl;
        END IF;
    END LOOP;
END
$$;

-- SELECT on every sequence of the schema, which reads its position (last_value) and nothing else:
-- nextval() needs USAGE or UPDATE. Sequences created later get it from default privileges, which
-- apply per creating role: every role owning a table or sequence of the schema now (whoever runs
-- the migrations), the owner variable, and the role running this script.
DO $$
DECLARE
    r text := current_setting('pgrb.role');
    s text := current_setting('pgrb.schema');
    o text;
BEGIN
    EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', s, r);
    FOR o IN
        SELECT pg_get_userbyid(c.relowner)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = s AND c.relkind IN ('r', 'p', 'S')
        UNION SELECT current_user
        UNION SELECT nullif(current_setting('pgrb.owner'), '')
    LOOP
        CONTINUE WHEN o IS NULL;
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON SEQUENCES TO %I',
            o, s, r);
    END LOOP;
END
$$;

COMMIT;
