"""Seed the portal schema at a chosen scale, with integrity faults whose counts are known.

Row values are derived from the columns the schema actually has (read from the catalog), so the
seeder follows `pg_runbook_exporter/sql/portal-schema.sql` as it changes instead of repeating it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

SCHEMA_FILE = (
    Path(__file__).resolve().parent.parent / "pg_runbook_exporter" / "sql" / "portal-schema.sql"
)


@dataclass(frozen=True)
class Faults:
    """Integrity faults seeded on purpose; the exporter's checks must report exactly these."""

    orphaned_mappings: int = 37
    duplicate_whmcs_groups: int = 11
    duplicate_sf_groups: int = 5


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    udt_name: str
    nullable: bool
    has_default: bool


def _columns(cur: psycopg.Cursor[tuple[object, ...]], table: str) -> list[Column]:
    cur.execute(
        "SELECT column_name, data_type, udt_name, is_nullable = 'YES', column_default IS NOT NULL"
        " FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s"
        " ORDER BY ordinal_position",
        (table,),
    )
    return [Column(str(r[0]), str(r[1]), str(r[2]), bool(r[3]), bool(r[4])) for r in cur]


def _typed(col: Column, text_expr: str, int_expr: str) -> str:
    """`text_expr` or `int_expr` cast to the column's type."""
    if col.data_type in ("integer", "bigint", "smallint", "numeric"):
        return f"({int_expr})::{col.udt_name}"
    if col.data_type == "uuid":
        return f"md5({text_expr})::uuid"
    return f"({text_expr})::{col.udt_name}"


def _user_id(col: Column, g: str) -> str:
    """The id of user number `g` (same expression for users.id and id_mappings.user_id)."""
    if col.data_type in ("integer", "bigint", "smallint"):
        return f"({g})::{col.udt_name}"
    uuid = f"md5('user' || ({g}))::uuid"
    return uuid if col.data_type == "uuid" else f"{uuid}::text"


def _filler(col: Column, g: str) -> str | None:
    """A value for a column no rule names; None leaves it to its default or NULL."""
    if col.has_default or col.nullable:
        return None
    if col.data_type.startswith("timestamp") or col.data_type == "date":
        return f"(now() - ({g}) * interval '1 second')::{col.udt_name}"
    if col.data_type in ("integer", "bigint", "smallint", "numeric", "real", "double precision"):
        return f"({g})::{col.udt_name}"
    if col.data_type == "boolean":
        return "false"
    if col.data_type == "USER-DEFINED":
        return f"(enum_range(NULL::{col.udt_name}))[1]"
    if col.data_type in ("json", "jsonb"):
        return f"'{{}}'::{col.udt_name}"
    return f"('x' || ({g}))::{col.udt_name}"


def _select_list(cols: list[Column], rules: dict[str, str], g: str) -> tuple[str, str]:
    names, exprs = [], []
    for col in cols:
        expr = rules.get(col.name)
        if expr is None:
            expr = _filler(col, g)
        if expr is not None:
            names.append(f'"{col.name}"')
            exprs.append(expr)
    return ", ".join(names), ", ".join(exprs)


def _find(cols: list[Column], *candidates: str) -> Column | None:
    by_name = {c.name.lower(): c for c in cols}
    for name in candidates:
        if name.lower() in by_name:
            return by_name[name.lower()]
    return None


class Seeder:
    """Bulk-inserts users and id_mappings through one superuser connection."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn
        cur = conn.cursor()
        self.users = _columns(cur, "users")
        self.mappings = _columns(cur, "id_mappings")
        uid = _find(self.users, "id")
        m_uid = _find(self.mappings, "user_id", "userId")
        if uid is None or m_uid is None:
            raise RuntimeError("portal schema has no users.id / id_mappings.user_id")
        self.uid, self.m_uid = uid, m_uid
        self.whmcs = _find(self.mappings, "whmcs_client_id", "whmcsClientId")
        self.sf = _find(self.mappings, "sf_account_id", "sfAccountId")

    def insert_users(self, first: int, last: int) -> None:
        g = "g"
        rules = {self.uid.name: _user_id(self.uid, g)}
        email = _find(self.users, "email")
        if email is not None:
            rules[email.name] = f"'user' || {g} || '@example.com'"
        names, exprs = _select_list(self.users, rules, g)
        self.conn.execute(
            f"INSERT INTO users ({names}) SELECT {exprs}"
            f" FROM generate_series({first}, {last}) g".encode()
        )

    def insert_mappings(
        self, *, first: int, last: int, user_of: str, whmcs_of: str = "g", sf_of: str = "g"
    ) -> None:
        """Mappings numbered first..last; `user_of` etc. are SQL in `g` giving the user number."""
        rules = {self.m_uid.name: _user_id(self.m_uid, user_of)}
        mid = _find(self.mappings, "id")
        if mid is not None and not mid.has_default:
            rules[mid.name] = _typed(mid, "'mapping' || g", "g")
        if self.whmcs is not None:
            rules[self.whmcs.name] = _typed(self.whmcs, f"({whmcs_of})::text", whmcs_of)
        if self.sf is not None:
            sf = f"'001' || lpad(({sf_of})::text, 15, '0')"
            rules[self.sf.name] = _typed(self.sf, sf, sf_of)
        names, exprs = _select_list(self.mappings, rules, "g")
        self.conn.execute(
            f"INSERT INTO id_mappings ({names}) SELECT {exprs}"
            f" FROM generate_series({first}, {last}) g".encode()
        )

    def unique(self, col: Column | None) -> bool:
        """Whether a unique index covers `col` alone (duplicates cannot be seeded then)."""
        if col is None:
            return True
        row = self.conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = i.indkey[0] WHERE i.indrelid = 'id_mappings'::regclass"
            " AND i.indisunique AND i.indnatts = 1 AND a.attname = %s",
            (col.name,),
        ).fetchone()
        return bool(row and int(str(row[0])) > 0)


@dataclass(frozen=True)
class Seeded:
    users: int
    mappings: int
    faults: Faults
    seconds: float


# The server runs with synchronous_commit off; a VACUUM right after an unflushed commit cannot mark
# the pages all-visible, and index-only scans would then read the heap as no production table
# that autovacuum keeps does. The seeding session commits synchronously.
SYNC = "-c synchronous_commit=on"


def load_schema(dsn: str) -> None:
    """Create the portal tables from the shipped portal-schema.sql, and pg_stat_statements."""
    with psycopg.connect(dsn, autocommit=True, options=SYNC) as conn:
        conn.execute(SCHEMA_FILE.read_text().encode())
        conn.execute(b"CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def seed(dsn: str, *, users: int, mappings: int) -> Seeded:
    """Users 1..users, mappings for them (cycling when there are more mappings), plus faults."""
    start = time.monotonic()
    faults = Faults()
    with psycopg.connect(dsn, autocommit=True, options=SYNC) as conn:
        s = Seeder(conn)
        # Mappings past the user count need users of their own when user_id is unique.
        n_users = max(users, mappings) if s.unique(s.m_uid) else users
        s.insert_users(1, n_users)
        s.insert_mappings(first=1, last=mappings, user_of=f"((g - 1) % {n_users}) + 1")
        with conn.transaction():
            # Orphans: mappings whose user never existed; the FK (if any) is bypassed on purpose.
            conn.execute(b"SET LOCAL session_replication_role = replica")
            base = mappings + 1
            s.insert_mappings(
                first=base, last=base + faults.orphaned_mappings - 1, user_of="g + 1000000000"
            )
        next_id = base + faults.orphaned_mappings
        dup_w = 0 if s.unique(s.whmcs) else faults.duplicate_whmcs_groups
        dup_s = 0 if s.unique(s.sf) else faults.duplicate_sf_groups
        for count, whmcs_of, sf_of in (
            (dup_w, f"g - {next_id} + 1", "g"),
            (dup_s, "g", f"g - {next_id + dup_w} + 1"),
        ):
            if count == 0:
                continue
            # Each fault is a new user whose mapping repeats the WHMCS/SF id of mapping 1..count.
            first, last = next_id, next_id + count - 1
            s.insert_users(n_users + first, n_users + last)
            s.insert_mappings(
                first=first, last=last, user_of=f"{n_users} + g", whmcs_of=whmcs_of, sf_of=sf_of
            )
            next_id += count
        conn.execute(b"VACUUM ANALYZE users")
        conn.execute(b"VACUUM ANALYZE id_mappings")
        faults = Faults(
            orphaned_mappings=faults.orphaned_mappings,
            duplicate_whmcs_groups=dup_w,
            duplicate_sf_groups=dup_s,
        )
    seconds = time.monotonic() - start
    logger.info("seeded %d users, %d mappings in %.1fs", n_users, mappings, seconds)
    return Seeded(users=n_users, mappings=mappings, faults=faults, seconds=seconds)


def add_mappings(dsn: str, *, have: int, want: int, users: int) -> float:
    """Grow id_mappings from `have` to `want` rows (new users too when user_id is unique)."""
    start = time.monotonic()
    # Past every earlier row and the orphans' user numbers, still inside integer range.
    offset = 1_500_000_000
    with psycopg.connect(dsn, autocommit=True, options=SYNC) as conn:
        s = Seeder(conn)
        extra = want - have
        if s.unique(s.m_uid):
            s.insert_users(offset + 1, offset + extra)
            user_of = "g"
        else:
            user_of = f"((g - 1) % {users}) + 1"
        s.insert_mappings(first=offset + 1, last=offset + extra, user_of=user_of)
        conn.execute(b"VACUUM ANALYZE users")
        conn.execute(b"VACUUM ANALYZE id_mappings")
    return time.monotonic() - start


def add_tables(dsn: str, *, count: int) -> float:
    """Create `count` small tables beside the portal's (the per-table checks' worst case)."""
    start = time.monotonic()
    with psycopg.connect(dsn, autocommit=True, options=SYNC) as conn:
        for first in range(1, count + 1, 500):
            last = min(first + 499, count)
            conn.execute(
                f"""DO $$ BEGIN FOR i IN {first}..{last} LOOP
                  EXECUTE format('CREATE TABLE IF NOT EXISTS bench_extra_%s'
                    ' (id integer PRIMARY KEY, note text)', lpad(i::text, 5, '0'));
                  EXECUTE format('INSERT INTO bench_extra_%s VALUES (1, %L)',
                    lpad(i::text, 5, '0'), 'row');
                END LOOP; END $$""".encode()
            )
        conn.execute(b"ANALYZE")
    return time.monotonic() - start
