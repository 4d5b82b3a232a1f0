"""The Dagster instance's event log storage on PostgreSQL, holding its connection.

dagster-postgres opens a new connection for every statement outside the webserver
(``NullPool``): a new server process with cold caches, ~5 ms, several per stored event. A ranged
run stores a check evaluation per partition, one event at a time, so that is most of Dagster's
cost per partition on PostgreSQL. ``optimize_for_webserver``, a public method of the storage,
gives it the pool the webserver itself uses (one connection, more while busy). The object built
is dagster-postgres' own class; its ``inst_data`` names this class, so every process that loads
the instance (daemon, code server, run workers) pools too. ``backfill_assets.instance`` names it
in the ``dagster.yaml`` it writes for Postgres storage; ``component/storage.py`` does the same
for SQLite.
"""

from collections.abc import Mapping

from dagster_postgres import PostgresEventLogStorage

# statement_timeout 0: no limit, as without the pool; connections are renewed hourly.
POOL = {"statement_timeout": 0, "pool_recycle": 3600, "max_overflow": 10}


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log storage, holding its connection as the webserver's does."""

    @classmethod
    def from_config_value(
        cls,
        inst_data,  # Dagster's ConfigurableClassData (not exported by `dagster`): passed on
        config_value: Mapping[str, object],
    ) -> PostgresEventLogStorage:
        storage = super().from_config_value(inst_data, config_value)
        storage.optimize_for_webserver(**POOL)
        return storage
