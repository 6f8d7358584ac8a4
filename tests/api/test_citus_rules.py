"""The migrated schema keeps Citus's rules for the distribution declared in
scripts/citus-distribute.sql (issue 12, item 5), checked on a plain PostgreSQL in every
`make test`, so that a migration cannot make the schema undistributable unseen:

- every table of the schema is declared: distributed (table, column, co-location), a
  reference table, or a local table of the coordinator; and every declared table exists;
- every primary key and unique index of a distributed table holds its distribution column
  as a plain key column (Citus cannot enforce uniqueness across shards otherwise);
- a foreign key from a distributed table goes to a reference table, or to a distributed
  table of the same co-location group with both distribution columns at the same position
  of the key; from a reference table only to a reference table; none to or from a local
  table;
- the tables of one co-location group have distribution columns of one type.
`make test-citus` proves the declaration on a real cluster."""
import re
import secrets
from dataclasses import dataclass

import pytest

from natterlib import REPO_ROOT, psql
from natterlib.env import need_env

DECLARATION = REPO_ROOT / "scripts" / "citus-distribute.sql"


@dataclass
class Decl:
    kind: str                 # "distributed", "reference" or "local"
    column: str | None = None
    group: str | None = None  # co-location group (the first table of it)


def parse_declaration(text: str) -> dict[str, Decl]:
    decls: dict[str, Decl] = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.fullmatch(r"SELECT create_distributed_table\('(\w+)', '(\w+)'"
                         r"(?:, colocate_with => '(\w+)')?\);", line)
        if m:
            table, column, colocate = m.groups()
            assert colocate, f"{table}: name its co-location (colocate_with), do not leave it to Citus"
            if colocate == "none":
                group = table
            else:
                assert colocate in decls and decls[colocate].kind == "distributed", \
                    f"{table}: co-located with {colocate}, which is not declared distributed before it"
                group = decls[colocate].group
            assert table not in decls, f"{table} declared twice"
            decls[table] = Decl("distributed", column, group)
            continue
        m = re.fullmatch(r"SELECT create_reference_table\('(\w+)'\);", line)
        if m:
            assert m.group(1) not in decls, f"{m.group(1)} declared twice"
            decls[m.group(1)] = Decl("reference")
            continue
        m = re.fullmatch(r"-- natter:local (\w+)", line)
        if m:
            decls[m.group(1)] = Decl("local")
            continue
        assert not re.search(r"create_(distributed|reference)_table", line), f"not understood: {line}"
    return decls


def rows(sql: str, url: str, *params) -> list[list[str]]:
    out = psql(sql, *params, url=url)
    return [ln.split("|") for ln in out.splitlines() if ln]


def violations(url: str, decls: dict[str, Decl], schema: str = "public") -> list[str]:
    """Every way the schema `schema` of the database at `url` breaks Citus's rules for
    `decls` (empty when it keeps them)."""
    found = []
    tables = {r[0] for r in rows("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                 " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')", url, schema)}
    for t in sorted(tables - decls.keys()):
        found.append(f"table {t} is not declared in {DECLARATION.name}")
    for t in sorted(decls.keys() - tables):
        found.append(f"{DECLARATION.name} declares {t}, which does not exist")

    # column name -> (attnum, type) per table
    cols: dict[str, dict[str, tuple[int, str]]] = {}
    for t, a, num, typ in rows("SELECT c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod)"
                               " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                               " JOIN pg_namespace n ON n.oid = c.relnamespace"
                               " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0"
                               " AND NOT a.attisdropped", url, schema):
        cols.setdefault(t, {})[a] = (int(num), typ)

    group_types: dict[str, tuple[str, str]] = {}
    for t, d in sorted(decls.items()):
        if d.kind != "distributed" or t not in tables:
            continue
        if d.column not in cols.get(t, {}):
            found.append(f"{t}: distribution column {d.column} does not exist")
            continue
        typ = cols[t][d.column][1]
        first = group_types.setdefault(d.group, (t, typ))
        if first[1] != typ:
            found.append(f"{t}.{d.column} is {typ} but {first[0]} of its co-location group is {first[1]}")

    # unique indexes (primary keys included): key columns as attnums (0 = expression)
    for t, idx, keys in rows("SELECT c.relname, i.relname, array_to_string(x.indkey[0:x.indnkeyatts - 1], ',')"
                             " FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid"
                             " JOIN pg_class i ON i.oid = x.indexrelid"
                             " JOIN pg_namespace n ON n.oid = c.relnamespace"
                             " WHERE n.nspname = $1 AND x.indisunique", url, schema):
        d = decls.get(t)
        if not d or d.kind != "distributed" or d.column not in cols.get(t, {}):
            continue
        attnums = [int(k) for k in keys.split(",") if k]
        if cols[t][d.column][0] not in attnums:
            found.append(f"unique index {idx} on {t} does not hold its distribution column {d.column}")
    for t, con in rows("SELECT c.relname, k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                       " JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE n.nspname = $1 AND k.contype = 'x'", url, schema):
        if decls.get(t) and decls[t].kind == "distributed":
            found.append(f"exclusion constraint {con} on distributed {t} cannot be enforced")

    # foreign keys
    for t, con, ref, keys, refkeys in rows(
            "SELECT c.relname, k.conname, r.relname, array_to_string(k.conkey, ','),"
            " array_to_string(k.confkey, ',')"
            " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND k.contype = 'f'",
            url, schema):
        src, dst = decls.get(t), decls.get(ref)
        if not src or not dst:
            continue
        what = f"foreign key {con} ({t} -> {ref})"
        if src.kind == "local" or dst.kind == "local":
            if src.kind != dst.kind:
                found.append(f"{what}: between a local table and a {dst.kind if src.kind == 'local' else src.kind} one")
            continue
        if dst.kind == "reference":
            continue
        if src.kind == "reference":
            found.append(f"{what}: a reference table cannot reference a distributed one")
            continue
        if src.group != dst.group:
            found.append(f"{what}: {t} and {ref} are not co-located")
            continue
        pairs = list(zip((int(k) for k in keys.split(",")), (int(k) for k in refkeys.split(","))))
        if (cols[t][src.column][0], cols[ref][dst.column][0]) not in pairs:
            found.append(f"{what}: the key does not pair {t}.{src.column} with {ref}.{dst.column}")
    return found


def test_migrated_schema_keeps_the_citus_rules(migrated):
    decls = parse_declaration(DECLARATION.read_text())
    assert any(d.kind == "distributed" for d in decls.values())
    found = violations(_test_url(), decls)
    assert not found, "\n".join(found)


def _test_url() -> str:
    return need_env("NATTER_TEST_DATABASE_URL")


@pytest.fixture
def scratch_schema():
    """An empty schema in the test database, dropped afterwards."""
    name = "citus_rules_" + secrets.token_hex(4)
    psql(f'CREATE SCHEMA "{name}"')
    yield name
    psql(f'DROP SCHEMA "{name}" CASCADE')


def test_the_check_finds_each_kind_of_violation(scratch_schema):
    """The checker itself: on a small schema that breaks each rule once, it names each
    break, and on the same schema without them it finds nothing."""
    s = scratch_schema
    psql(f"""
        CREATE TABLE "{s}".users (id bigint PRIMARY KEY, name text NOT NULL);
        CREATE UNIQUE INDEX users_name ON "{s}".users (lower(name));
        CREATE TABLE "{s}".chats (id bigint PRIMARY KEY, owner bigint REFERENCES "{s}".users (id));
        CREATE TABLE "{s}".members (chat_id bigint REFERENCES "{s}".chats (id), user_id bigint,
                                    PRIMARY KEY (chat_id, user_id));
        CREATE TABLE "{s}".kinds (k text PRIMARY KEY);
        CREATE TABLE "{s}".stray (x int);
    """)
    decls = parse_declaration("""
        SELECT create_distributed_table('users', 'id', colocate_with => 'none');
        SELECT create_distributed_table('chats', 'id', colocate_with => 'none');
        SELECT create_distributed_table('members', 'chat_id', colocate_with => 'chats');
        SELECT create_reference_table('kinds');
        SELECT create_reference_table('gone');
    """)
    found = violations(_test_url(), decls, s)
    text = "\n".join(found)
    assert "table stray is not declared" in text, text
    assert "declares gone, which does not exist" in text, text
    assert "unique index users_name on users does not hold" in text, text
    assert "foreign key chats_owner_fkey (chats -> users): chats and users are not co-located" in text, text
    assert len(found) == 4, text

    psql(f'DROP TABLE "{s}".stray; DROP INDEX "{s}".users_name;'
         f' ALTER TABLE "{s}".chats DROP CONSTRAINT chats_owner_fkey')
    del decls["gone"]
    assert violations(_test_url(), decls, s) == []
