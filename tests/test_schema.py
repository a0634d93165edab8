"""Foundation: migrations, the schema snapshot, seed constraints, triggers, privileges."""

from __future__ import annotations

import json
import re
import shutil
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from dbctl.haproxy import MARKER
from dbctl.migrate import (
    MIGRATIONS,
    ROOT,
    apply_migrations,
    as_owner,
    bootstrap,
    load_functions,
    migrate,
    yoyo_url,
)
from dbctl.monitor import QUERIES, exporter_command
from dbctl.schema import SNAPSHOT, dump_schema
from tests.conftest import CLUSTER, create_database, url_for

SEED_TABLES = [
    "users", "events", "ticket_types", "order_reservations",
    "orders", "order_items", "payments", "tickets",
]  # fmt: skip


def test_migrations_build_every_seed_table_and_extension(owner: psycopg.Connection) -> None:
    tables = {r[0] for r in owner.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(SEED_TABLES) <= tables
    extensions = {r[0] for r in owner.execute("SELECT extname FROM pg_extension")}
    assert {"pgcrypto", "pg_trgm"} <= extensions
    owners = {r[0] for r in owner.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {"booking_owner"}


def test_fresh_build_equals_committed_snapshot(dbname: str) -> None:
    assert dump_schema(CLUSTER, dbname) == SNAPSHOT.read_text(), (
        "sql/schema.sql is stale: run `make schema` and commit it"
    )


def test_migrating_twice_changes_nothing(dbname: str) -> None:
    before = dump_schema(CLUSTER, dbname)
    assert migrate(url_for(dbname, "postgres")) == []
    assert dump_schema(CLUSTER, dbname) == before


def test_step_by_step_upgrade_ends_identical_to_fresh_build() -> None:
    name = "stepwise"
    create_database(name)
    url = url_for(name, "postgres")
    bootstrap(url)
    migrate_one_by_one = read_migrations(str(MIGRATIONS))
    backend = get_backend(yoyo_url(as_owner(url)))
    for migration in migrate_one_by_one:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(MigrationList([migration])))
    # Today's functions need today's tables and types (the deploy that brings them brings the
    # migrations too): loaded once, after the last step.
    load_functions(url)
    assert dump_schema(CLUSTER, name) == SNAPSHOT.read_text()


def test_broken_migration_fails_loudly_and_changes_nothing(dbname: str, tmp_path: Path) -> None:
    source = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, source)
    (source / "9999_broken.sql").write_text(
        "-- depends: 0002_booking_core\n"
        "CREATE TABLE half_done (id int);\n"
        "ALTER TABLE users ADD COLUMN nickname text;\n"
        "SELECT no_such_function();\n"
    )
    before = dump_schema(CLUSTER, dbname)
    with pytest.raises(psycopg.errors.UndefinedFunction):
        apply_migrations(url_for(dbname, "postgres"), source)
    assert dump_schema(CLUSTER, dbname) == before
    with psycopg.connect(url_for(dbname, "postgres")) as conn:
        applied = {r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration")}
    assert "9999_broken" not in applied


def test_broken_function_file_keeps_the_old_functions(dbname: str, tmp_path: Path) -> None:
    source = tmp_path / "functions"
    shutil.copytree(ROOT / "sql" / "functions", source)
    (source / "99_broken.sql").write_text("CREATE OR REPLACE FUNCTION api.broken() RETURNS int AS $$ nope $$;")
    before = dump_schema(CLUSTER, dbname)
    with pytest.raises(RuntimeError, match=r"99_broken\.sql"):
        load_functions(url_for(dbname, "postgres"), source)
    assert dump_schema(CLUSTER, dbname) == before


def test_loader_drops_functions_the_files_no_longer_define(dbname: str, owner: psycopg.Connection) -> None:
    owner.execute("CREATE FUNCTION api.left_over() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    load_functions(url_for(dbname, "postgres"))
    assert owner.execute("SELECT to_regprocedure('api.left_over()')").fetchone() == (None,)


def _insert_ids(conn: psycopg.Connection) -> dict[str, str]:
    ids: dict[str, str] = {}
    ids["user"] = conn.execute(
        "INSERT INTO users (email, password_hash, full_name) VALUES ('c@x.io','h','C') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    ids["event"] = conn.execute(
        "INSERT INTO events (slug, name, location, start_time, end_time)"
        " VALUES ('e', 'E', 'L', now(), now() + interval '1 hour') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    ids["tt"] = conn.execute(
        "INSERT INTO ticket_types (event_id, name, price, initial_quantity, available_quantity)"
        " VALUES (%s, 'T', 1, 10, 10) RETURNING id",
        (ids["event"],),
    ).fetchone()[0]  # type: ignore[index]
    ids["order"] = conn.execute(
        "INSERT INTO orders (user_id, total_amount) VALUES (%s, 1) RETURNING id", (ids["user"],)
    ).fetchone()[0]  # type: ignore[index]
    return ids


BAD_ROWS = {
    "email format": "INSERT INTO users (email, password_hash, full_name) VALUES ('nope', 'h', 'N')",
    "user role": "INSERT INTO users (email, password_hash, full_name, role) VALUES ('r@x.io','h','N','root')",
    "event status": "INSERT INTO events (slug, name, location, start_time, end_time, status)"
    " VALUES ('s', 'N', 'L', now(), now() + interval '1 hour', 'LIVE')",
    "event end before start": "INSERT INTO events (slug, name, location, start_time, end_time)"
    " VALUES ('t', 'N', 'L', now(), now())",
    "negative price": "INSERT INTO ticket_types (event_id, name, price, initial_quantity, available_quantity)"
    " VALUES (%(event)s, 'T', -1, 1, 1)",
    "negative quantity": "INSERT INTO ticket_types (event_id, name, price, initial_quantity, available_quantity)"
    " VALUES (%(event)s, 'T', 1, -1, 0)",
    "negative available": "UPDATE ticket_types SET available_quantity = -1 WHERE id = %(tt)s",
    "available above initial": "UPDATE ticket_types SET available_quantity = 11 WHERE id = %(tt)s",
    "reservation quantity": "INSERT INTO order_reservations (user_id, ticket_type_id, quantity, expires_at)"
    " VALUES (%(user)s, %(tt)s, 0, now())",
    "reservation status": "INSERT INTO order_reservations (user_id, ticket_type_id, quantity, expires_at, status)"
    " VALUES (%(user)s, %(tt)s, 1, now(), 'HELD')",
    "order amount": "INSERT INTO orders (user_id, total_amount) VALUES (%(user)s, -1)",
    "order status": "INSERT INTO orders (user_id, total_amount, status) VALUES (%(user)s, 1, 'SHIPPED')",
    "item quantity": "INSERT INTO order_items (order_id, ticket_type_id, quantity, unit_price)"
    " VALUES (%(order)s, %(tt)s, 0, 1)",
    "item price": "INSERT INTO order_items (order_id, ticket_type_id, quantity, unit_price)"
    " VALUES (%(order)s, %(tt)s, 1, -1)",
    "payment method": "INSERT INTO payments (order_id, payment_method, amount) VALUES (%(order)s, 'CASH', 1)",
    "payment status": "INSERT INTO payments (order_id, payment_method, amount, status)"
    " VALUES (%(order)s, 'CARD', 1, 'LOST')",
    "payment amount": "INSERT INTO payments (order_id, payment_method, amount) VALUES (%(order)s, 'CARD', -1)",
    "ticket status": "INSERT INTO tickets (order_id, ticket_type_id, ticket_code, status)"
    " VALUES (%(order)s, %(tt)s, 'X1', 'ACTIVE')",
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_seed_constraint_rejects(case: str, owner: psycopg.Connection) -> None:
    ids = _insert_ids(owner)
    with pytest.raises(psycopg.errors.CheckViolation):
        owner.execute(BAD_ROWS[case], ids)


def test_tickets_default_to_unused(owner: psycopg.Connection) -> None:
    ids = _insert_ids(owner)
    status = owner.execute(
        "INSERT INTO tickets (order_id, ticket_type_id, ticket_code) VALUES (%(order)s, %(tt)s, 'X2') RETURNING status",
        ids,
    ).fetchone()
    assert status == ("UNUSED",)


@pytest.mark.parametrize(
    ("table", "key", "change"),
    [
        ("users", "user", "full_name = 'D'"),
        ("events", "event", "name = 'F'"),
        ("ticket_types", "tt", "name = 'U'"),
        ("orders", "order", "status = 'PAID'"),
    ],
)
def test_updated_at_trigger_fires(table: str, key: str, change: str, owner: psycopg.Connection) -> None:
    ids = _insert_ids(owner)
    owner.execute(f"UPDATE {table} SET updated_at = '2000-01-01' WHERE id = %s", (ids[key],))
    # The trigger overwrites whatever the UPDATE sets: even the explicit value above is replaced.
    stamp = owner.execute(f"SELECT updated_at FROM {table} WHERE id = %s", (ids[key],)).fetchone()
    assert stamp is not None and stamp[0].year > 2000
    owner.execute(f"UPDATE {table} SET {change} WHERE id = %s", (ids[key],))
    after = owner.execute(f"SELECT updated_at FROM {table} WHERE id = %s", (ids[key],)).fetchone()
    assert after is not None and after[0] >= stamp[0]


@pytest.mark.parametrize(
    "table", [*SEED_TABLES, "order_emails", "webhooks", "webhook_deliveries", "webhook_attempts", "procrastinate_jobs"]
)
def test_gateway_role_cannot_read_tables(table: str, gw: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gw.execute(f"SELECT 1 FROM public.{table} LIMIT 1")


def test_gateway_role_has_no_table_privileges_at_all(owner: psycopg.Connection) -> None:
    rows = owner.execute(
        """
        SELECT c.relname, p.priv
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) p(priv)
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r','v','m','p')
           AND has_table_privilege('booking_gateway', c.oid, p.priv)
        """
    ).fetchall()
    assert rows == []


NODES = ("node1", "node2")
GATEWAYS = ("gateway1", "gateway2")


def test_docker_compose_wires_the_failover_formation_and_migrate() -> None:
    """make cluster's layout: a pg_auto_failover monitor, node1 (the first primary: it alone may
    initdb), node2 (pg_basebackup of it, so it starts once node1 answers), migrate once both do."""
    services = compose_services()
    assert {"monitor", *NODES, "migrate", *GATEWAYS, "haproxy", "worker"} <= set(services)
    assert "db" not in services  # one PostgreSQL without a standby is not the layout any more
    for name in ("monitor", *NODES):
        build = services[name]["build"]
        dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
        for package in ("postgresql-15-cron", "postgresql-15-auto-failover", "pg-auto-failover-cli"):
            assert package in dockerfile, (name, package)
        assert "docker/pgaf-node.sh" in dockerfile
        env = services[name]["environment"]
        assert env["PGAF_HOSTNAME"] == services[name]["hostname"] == name
        assert env["PGAF_MONITOR_HOST"] == "monitor" and "healthcheck" in services[name]
        assert services[name]["restart"] == "unless-stopped"
    assert services["monitor"]["command"] == ["monitor"]
    assert [services[n]["command"] for n in NODES] == [["node"], ["node"]]
    assert services["node1"]["environment"].get("PGAF_FIRST") == "yes"
    assert "PGAF_FIRST" not in services["node2"]["environment"]
    assert services["node1"]["depends_on"]["monitor"]["condition"] == "service_healthy"
    assert services["node2"]["depends_on"]["node1"]["condition"] == "service_healthy"
    assert {n: c["condition"] for n, c in services["migrate"]["depends_on"].items()} == {
        n: "service_healthy" for n in NODES
    }
    assert services["migrate"].get("restart", "no") == "no"
    for name in (*GATEWAYS, "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The script sets what its pg_hba.conf needs, and pg_cron's settings (as dbctl/autofailover.py).
    script = (ROOT / "docker" / "pgaf-node.sh").read_text()
    assert "shared_preload_libraries = 'pg_cron" in script and "cron.database_name = 'booking'" in script
    assert "--skip-pg-hba" in script and "scram-sha-256" in script and " trust" not in script


def test_docker_compose_clients_find_the_primary_by_themselves() -> None:
    """Every client names both nodes; libpq keeps the one fitting target_session_attrs, so the
    gateways and the worker follow a failover without a restart."""
    services = compose_services()
    urls = {
        "migrate": services["migrate"]["environment"]["DATABASE_URL"],
        "worker": services["worker"]["environment"]["WORKER_DATABASE_URL"],
        **{g: services[g]["environment"]["GATEWAY_DATABASE_URL"] for g in GATEWAYS},
    }
    for name, url in urls.items():
        params = conninfo_to_dict(interpolate(url))
        assert params["host"] == "node1,node2" and params["port"] == "5432,5432", name
        assert params["target_session_attrs"] == "read-write" and params["dbname"] == "booking", name
    for g in GATEWAYS:
        read = conninfo_to_dict(interpolate(services[g]["environment"]["GATEWAY_DATABASE_READ_URL"]))
        assert read["host"] == "node1,node2" and read["target_session_attrs"] == "prefer-standby"
        assert read["user"] == "booking_gateway"


def test_docker_compose_haproxy_fronts_every_gateway_and_alone_is_trusted() -> None:
    services = compose_services()
    haproxy = services["haproxy"]
    assert binds(haproxy) == {"/usr/local/etc/haproxy/booking.cfg": ROOT / "ops" / "haproxy" / "haproxy.cfg"}
    # Its command puts one server line per gateway service in place of the marker, as make lb does.
    script = haproxy["command"][-1]
    match = re.search(r"s/(# @GATEWAYS@)/(.*?)/'", script)
    assert match and match.group(1) == MARKER
    servers = re.findall(r"server (gw\d+) (\w+):(\d+)", match.group(2))
    assert [(host, port) for _, host, port in servers] == [(g, "8000") for g in GATEWAYS]
    assert (ROOT / "ops" / "haproxy" / "haproxy.cfg").read_text().count(MARKER) == 1
    address = haproxy["networks"]["default"]["ipv4_address"]
    network = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["networks"]["default"]
    (subnet,) = [c["subnet"] for c in network["ipam"]["config"]]
    assert ip_address(address) in ip_network(subnet)
    assert haproxy["environment"]["HAPROXY_SOURCE"] == address
    assert [p.split(":")[1] for p in haproxy["ports"]] == ["8000", "8404"]
    for g in GATEWAYS:
        env = services[g]["environment"]
        assert env["TRUSTED_PROXIES"] == address and env["WEB_CONCURRENCY"] == "1"
        assert "ports" not in services[g]  # reached through HAProxy only
        assert "healthcheck" in services[g]


# ------------------------------------------------------------------ docker-compose.yml: monitoring


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} / ${VAR} with nothing set: the default, "", ""."""
    return re.sub(r"\$\{\w+(?::?-([^}]*)|:?\?[^}]*)?\}", lambda m: m.group(1) or "", value)


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """The service's bind mounts: path in the container -> file or directory in the repo."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def flags(service: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in service["command"] if arg.startswith("--"))


def test_docker_compose_pins_every_image_and_publishes_on_loopback_only() -> None:
    services = compose_services()
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "image" in service:
            image, _, tag = service["image"].rpartition(":")
            assert image and "/" not in tag, f"{name}: {service['image']} has no tag"
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is not pinned to a version"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    published = {name: [p.split(":")[1] for p in s.get("ports", [])] for name, s in services.items()}
    assert published["prometheus"] == ["9090"] and published["grafana"] == ["3000"]


def test_docker_compose_mounts_only_files_of_the_repo_that_exist() -> None:
    mounted = [path for service in compose_services().values() for path in binds(service).values()]
    assert mounted
    for path in mounted:
        assert path.is_file(), f"docker-compose.yml mounts {path.relative_to(ROOT)}, which does not exist"
    assert {path.relative_to(ROOT).parts[0] for path in mounted} == {"ops"}


def test_docker_compose_exporter_runs_as_dbctl_runs_it_with_the_monitor_role() -> None:
    services = compose_services()
    exporter = services["postgres-exporter"]
    # v0.11.x: Debian 12's version (the tests run it), and one that still reads --extend.query-path.
    assert exporter["image"].startswith("prometheuscommunity/postgres-exporter:v0.11.")
    ours = flags({"command": exporter_command("exporter", "127.0.0.1:9187")})
    theirs = flags(exporter)
    assert set(theirs) == set(ours)
    assert binds(exporter)[theirs["extend.query-path"]] == QUERIES
    assert theirs["web.listen-address"].rpartition(":")[2] == "9187"
    # One key=value DSN per node, comma-separated (the exporter scrapes each: a `server` label).
    dsns = [conninfo_to_dict(d) for d in interpolate(exporter["environment"]["DATA_SOURCE_NAME"]).split(",")]
    assert [d["host"] for d in dsns] == list(NODES)
    for dsn in dsns:
        assert dsn["dbname"] == "booking" and dsn["user"] == "booking_monitor" and dsn["sslmode"] == "disable"
    dsn = dsns[0]
    # The password migrate gives booking_monitor (dbctl bootstrap: MONITOR_DB_PASSWORD) is the one
    # the exporter logs in with, from the same variable with the same default.
    migrate_env = services["migrate"]["environment"]
    assert "${MONITOR_DB_PASSWORD" in exporter["environment"]["DATA_SOURCE_NAME"]
    assert migrate_env["MONITOR_DB_PASSWORD"].startswith("${MONITOR_DB_PASSWORD")
    assert dsn["password"] and dsn["password"] == interpolate(migrate_env["MONITOR_DB_PASSWORD"])
    assert exporter["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_docker_compose_prometheus_scrapes_the_compose_services_with_our_rules() -> None:
    services = compose_services()
    prometheus = services["prometheus"]
    mounted = binds(prometheus)
    config_path = flags(prometheus)["config.file"]
    assert mounted[config_path] == ROOT / "ops" / "prometheus" / "prometheus-compose.yml"
    config = yaml.safe_load(mounted[config_path].read_text())
    single = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    # The same rules, mounted beside the config (rule_files are relative to it).
    assert config["rule_files"] == single["rule_files"]
    for rule_file in config["rule_files"]:
        assert str(Path(config_path).parent / rule_file) in mounted, rule_file
    # The same jobs (the alerts and the dashboard select on them), each aimed at a compose service
    # on the port it listens on.
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {job["job_name"] for job in single["scrape_configs"]}
    exporter_port = flags(services["postgres-exporter"])["web.listen-address"].rpartition(":")[2]
    # Each gateway instance directly (uvicorn --port 8000, docker/gateway.Dockerfile), never
    # through HAProxy (a scrape there would reach a random instance).
    expected = {
        "booking-gateway": {g: "8000" for g in GATEWAYS},
        "booking-postgres": {"postgres-exporter": exporter_port},
    }
    for name, job in jobs.items():
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == [f"{service}:{port}" for service, port in expected[name].items()], name
        assert set(expected[name]) <= set(prometheus["depends_on"])


def grafana_provisioning(kind: str) -> tuple[str, dict[str, Any]]:
    mounted = binds(compose_services()["grafana"])
    (target,) = [t for t in mounted if t.startswith(f"/etc/grafana/provisioning/{kind}/")]
    assert mounted[target].parent == ROOT / "ops" / "grafana" / "provisioning" / kind
    return target, yaml.safe_load(mounted[target].read_text())


def test_docker_compose_grafana_provisions_the_onsale_dashboard() -> None:
    mounted = binds(compose_services()["grafana"])
    _, provisioning = grafana_provisioning("dashboards")
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    in_folder = {mounted[t] for t in mounted if Path(t).parent == Path(folder) and t.endswith(".json")}
    assert in_folder == {ROOT / "ops" / "grafana" / "onsale.json"}


def test_docker_compose_grafana_datasource_is_the_one_the_dashboard_uses() -> None:
    services = compose_services()
    _, provisioning = grafana_provisioning("datasources")
    (source,) = provisioning["datasources"]
    dashboard = json.loads((ROOT / "ops" / "grafana" / "onsale.json").read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    # The dashboard picks its data source through this variable: the default one of its type.
    assert source["type"] == variable["query"] == "prometheus"
    assert source["isDefault"] is True
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dashboard["panels"])))
    assert uids <= {"${" + variable["name"] + "}", source["uid"]}, uids
    port = flags(services["prometheus"])["web.listen-address"].rpartition(":")[2]
    assert source["url"] == f"http://prometheus:{port}"
    assert "prometheus" in services["grafana"]["depends_on"]
