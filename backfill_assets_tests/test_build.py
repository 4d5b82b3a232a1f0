"""build_window on real DuckDB files: hand-computed results, atomicity, idempotence, evidence.

Every expected value below is worked out by hand from ``backfill_assets/fixtures/*.csv`` and the
rules of ARCHITECTURE.md §3, never copied from a run. The pilot rows, for reference:

orders (order_id, customer, region, order_ts, amount, status, ingested_at)
  ...01 9000001 pilot 02-28 10:00 100 placed  02-28 10:05 | same, shipped 02-29 09:00
  ...02 9000002 pilot 02-29 12:00  50 placed  02-29 12:01 | same, cancelled 03-02 08:00
  ...03 9000001 pilot 02-29 23:30  80 test
  ...04 9000003 NULL  02-29 15:00  40 shipped
  ...05 9000002 pilot 02-29 18:00  70 placed
  ...06 9000003 NULL  02-29 22:00  30 placed  02-29 22:01 | pilot 03-01 01:00 shipped 03-01 09:00
  ...07 9000002 pilot 03-01 11:00  60 shipped 03-04 07:00 (late)
refunds: 101 -> ...05 03-05 20 | 102 -> ...06 03-02 10 | 103 -> ...02 03-01 5
         104 -> 9999999999 (no such order) 03-01 7
customers: 9000001 consumer [2023-01-01, 2024-02-29), smb from 2024-02-29 (current);
           9000002 enterprise; 9000003 consumer
"""

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import duckdb
import pytest

import backfill_assets.evidence as evidence_module
from backfill_assets.build import BuildError, build_window
from backfill_assets.example.generator import TABLES, ensure_tables
from backfill_assets.fingerprint import changed_partitions
from backfill_assets.plan import Plan
from backfill_assets.warehouse import ensure_schema

D = Decimal
START = dt.date(2024, 2, 26)
END = dt.date(2024, 3, 8)  # exclusive: the window is 2024-02-26 .. 2024-03-07
WINDOW_DAYS = [START + dt.timedelta(days=i) for i in range((END - START).days)]
MEASURES = ("orders", "gross_revenue", "refunds", "net_revenue")


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _sort_key(row: tuple) -> tuple:
    return tuple((value is None, value) for value in row)


def rows_of(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=_sort_key)


def table_checksum(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[int, str]:
    """Row count and md5 of every row rendered as text, in a fixed order."""
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
    ).fetchone()


def evidence_checksum(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, *, all_columns: bool = False
) -> tuple[int, str]:
    """Checksum of the plan version's evidence rows (without run_id/written_at unless asked)."""
    columns = "*" if all_columns else "* EXCLUDE (run_id, written_at, build_seconds)"
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        "ORDER BY CAST(t AS VARCHAR)), '')) FROM ("
        f"SELECT {columns} FROM backfill.partition_evidence "
        "WHERE model = $model AND version = $version) AS t",
        {"model": plan.name, "version": version},
    ).fetchone()


def build_pilot_window(conn, daily_revenue: Plan, fct_orders: Plan, run_id: str = "run-1"):
    for plan in (daily_revenue, fct_orders):
        for version in ("legacy", "v2"):
            build_window(conn, plan, version, START, END, run_id)


# --------------------------------------------------------------------------------------------
# 1. Hand-computed results on the pilot fixture
# --------------------------------------------------------------------------------------------

# legacy: every raw order row, every status, on its own day and region; refunds on the day and
# region of the order's first-ingested version; the orphan refund 104 is ignored.
EXPECTED_DAILY_REVENUE_LEGACY = [
    # 02-28 pilot: ...01 v1 100 + ...01 v2 100 = 2 orders, 200; no refunds
    (day("2024-02-28"), "pilot", 2, D("200.00"), D("0.00"), D("200.00")),
    # 02-29 pilot: ...02 v1 50 + ...02 v2 50 + ...03 80 + ...05 70 = 4 orders, 250;
    # refunds 101 (...05, first version 02-29 pilot) 20 + 103 (...02, 02-29 pilot) 5 = 25;
    # net 250 - 25 = 225
    (day("2024-02-29"), "pilot", 4, D("250.00"), D("25.00"), D("225.00")),
    # 03-01 pilot: ...06 v2 30 + ...07 60 = 2 orders, 90; no refund lands here
    (day("2024-03-01"), "pilot", 2, D("90.00"), D("0.00"), D("90.00")),
    # 02-29 NULL: ...04 40 + ...06 v1 30 = 2 orders, 70; refund 102 (...06, first version
    # 02-29 NULL) 10; net 70 - 10 = 60
    (day("2024-02-29"), None, 2, D("70.00"), D("10.00"), D("60.00")),
]

# v2: latest version only; ...02 (cancelled) and ...03 (test) excluded with refund 103; refunds on
# the refund's day in the latest version's region; the orphan refund 104 is ignored.
EXPECTED_DAILY_REVENUE_V2 = [
    # 02-28 pilot: ...01 latest 100
    (day("2024-02-28"), "pilot", 1, D("100.00"), D("0.00"), D("100.00")),
    # 02-29 pilot: ...05 70 (...02 cancelled, ...03 test excluded)
    (day("2024-02-29"), "pilot", 1, D("70.00"), D("0.00"), D("70.00")),
    # 03-01 pilot: ...06 latest (moved to 03-01, pilot) 30 + ...07 60 = 2 orders, 90
    (day("2024-03-01"), "pilot", 2, D("90.00"), D("0.00"), D("90.00")),
    # 03-02 pilot: refund 102 10 on its own day, in ...06's latest region pilot; net 0 - 10
    (day("2024-03-02"), "pilot", 0, D("0.00"), D("10.00"), D("-10.00")),
    # 03-05 pilot: refund 101 20 on its own day, ...05's region pilot; net 0 - 20
    (day("2024-03-05"), "pilot", 0, D("0.00"), D("20.00"), D("-20.00")),
    # 02-29 NULL: ...04 40 (...06 has left NULL/02-29 with its re-send)
    (day("2024-02-29"), None, 1, D("40.00"), D("0.00"), D("40.00")),
]

# fct_orders: one row per order (latest version), every status.
# legacy segment: current row (valid_to IS NULL) -> 9000001 smb, 9000002 enterprise,
# 9000003 consumer.
EXPECTED_FCT_ORDERS_LEGACY = [
    (9000000001, day("2024-02-28"), 9000001, "pilot", "shipped", D("100.00"), "smb"),
    (9000000002, day("2024-02-29"), 9000002, "pilot", "cancelled", D("50.00"), "enterprise"),
    (9000000003, day("2024-02-29"), 9000001, "pilot", "test", D("80.00"), "smb"),
    (9000000004, day("2024-02-29"), 9000003, None, "shipped", D("40.00"), "consumer"),
    (9000000005, day("2024-02-29"), 9000002, "pilot", "placed", D("70.00"), "enterprise"),
    (9000000006, day("2024-03-01"), 9000003, "pilot", "shipped", D("30.00"), "consumer"),
    (9000000007, day("2024-03-01"), 9000002, "pilot", "shipped", D("60.00"), "enterprise"),
]

# v2 segment: valid at order_ts. Only ...01 (02-28 10:00, before 9000001 became smb on
# 2024-02-29 00:00) differs: consumer. ...03 at 02-29 23:30 is already smb.
EXPECTED_FCT_ORDERS_V2 = [
    (9000000001, day("2024-02-28"), 9000001, "pilot", "shipped", D("100.00"), "consumer"),
    *EXPECTED_FCT_ORDERS_LEGACY[1:],
]


def test_pilot_window_matches_hand_computed_rows(pilot, daily_revenue, fct_orders):
    build_pilot_window(pilot, daily_revenue, fct_orders)

    assert rows_of(pilot, "models.daily_revenue__legacy") == sorted(
        EXPECTED_DAILY_REVENUE_LEGACY, key=_sort_key
    )
    assert rows_of(pilot, "models.daily_revenue__v2") == sorted(
        EXPECTED_DAILY_REVENUE_V2, key=_sort_key
    )
    assert rows_of(pilot, "models.fct_orders__legacy") == EXPECTED_FCT_ORDERS_LEGACY
    assert rows_of(pilot, "models.fct_orders__v2") == EXPECTED_FCT_ORDERS_V2


def test_model_columns_are_the_documented_ones(pilot, daily_revenue, fct_orders):
    build_pilot_window(pilot, daily_revenue, fct_orders)
    for table, columns in {
        "models.daily_revenue__v2": [
            "order_date",
            "region",
            "orders",
            "gross_revenue",
            "refunds",
            "net_revenue",
        ],
        "models.fct_orders__v2": [
            "order_id",
            "order_date",
            "customer_id",
            "region",
            "status",
            "amount",
            "customer_segment",
        ],
    }.items():
        assert [r[0] for r in pilot.execute(f"DESCRIBE {table}").fetchall()] == columns


# --------------------------------------------------------------------------------------------
# 2. Legacy -> v2 is exactly the three explained rules
# --------------------------------------------------------------------------------------------

# Each rule's delta per (order_date, region), worked out by hand:
EXPECTED_RULE_DELTAS = {
    # versions that are not the latest: ...01 v1 (02-28 pilot 100), ...02 v1 (02-29 pilot 50),
    # ...06 v1 (02-29 NULL 30); each takes away 1 order and its amount
    "duplicates_removed": {
        (day("2024-02-28"), "pilot"): (-1, D("-100"), D("0"), D("-100")),
        (day("2024-02-29"), "pilot"): (-1, D("-50"), D("0"), D("-50")),
        (day("2024-02-29"), None): (-1, D("-30"), D("0"), D("-30")),
    },
    # ...02 (latest cancelled, 50) + ...03 (test, 80) leave 02-29 pilot: -2 orders, -130;
    # ...02's refund 103 (5) leaves legacy's place 02-29 pilot; net -130 - (-5) = -125
    "excluded_statuses": {
        (day("2024-02-29"), "pilot"): (-2, D("-130"), D("-5"), D("-125")),
    },
    # refund 101 (20): leaves 02-29 pilot, arrives 03-05 pilot;
    # refund 102 (10): leaves 02-29 NULL (first version), arrives 03-02 pilot (latest region)
    "refund_timing_moved": {
        (day("2024-02-29"), "pilot"): (0, D("0"), D("-20"), D("20")),
        (day("2024-02-29"), None): (0, D("0"), D("-10"), D("10")),
        (day("2024-03-02"), "pilot"): (0, D("0"), D("10"), D("-10")),
        (day("2024-03-05"), "pilot"): (0, D("0"), D("20"), D("-20")),
    },
}


def _by_key(rows) -> dict[tuple, tuple]:
    return {(r[0], r[1]): tuple(Decimal(v) for v in r[2:6]) for r in rows}


def test_legacy_plus_explained_rules_equals_v2(pilot, daily_revenue, fct_orders):
    build_pilot_window(pilot, daily_revenue, fct_orders)
    cols = ", ".join(["order_date", "region", *MEASURES])
    legacy = _by_key(pilot.execute(f"SELECT {cols} FROM models.daily_revenue__legacy").fetchall())
    v2 = _by_key(pilot.execute(f"SELECT {cols} FROM models.daily_revenue__v2").fetchall())

    rules = daily_revenue.spec.checks.reconciliation.explained_differences
    assert sorted(r.name for r in rules) == sorted(EXPECTED_RULE_DELTAS)
    predicted: dict[tuple, list[Decimal]] = defaultdict(lambda: [D(0)] * len(MEASURES))
    for key, values in legacy.items():
        predicted[key] = list(values)
    for rule in rules:
        result = pilot.execute(daily_revenue.read_sql(rule.sql), {"start": START, "end": END})
        names = [d[0] for d in result.description]
        deltas: dict[tuple, tuple] = defaultdict(lambda: (D(0),) * len(MEASURES))
        for row in result.fetchall():
            values = dict(zip(names, row, strict=True))
            key = (values["order_date"], values["region"])
            summed = [a + Decimal(values[m]) for a, m in zip(deltas[key], MEASURES, strict=True)]
            deltas[key] = tuple(summed)
        nonzero = {k: v for k, v in deltas.items() if any(x != 0 for x in v)}
        assert nonzero, f"rule {rule.name} explains nothing on the pilot fixture"
        assert nonzero == EXPECTED_RULE_DELTAS[rule.name], rule.name
        for key, delta in deltas.items():
            predicted[key] = [a + b for a, b in zip(predicted[key], delta, strict=True)]

    keys = set(predicted) | set(v2)
    zero = (D(0),) * len(MEASURES)
    for key in keys:
        assert tuple(predicted.get(key, zero)) == v2.get(key, zero), key


# --------------------------------------------------------------------------------------------
# 3. Idempotence and chunking
# --------------------------------------------------------------------------------------------

MODEL_VERSIONS = [
    ("daily_revenue", "legacy"),
    ("daily_revenue", "v2"),
    ("fct_orders", "legacy"),
    ("fct_orders", "v2"),
]


def _plan(request, name: str) -> Plan:
    return request.getfixturevalue(name)


@pytest.mark.parametrize(("plan_name", "version"), MODEL_VERSIONS)
def test_rerunning_a_window_leaves_identical_content(generated, request, plan_name, version):
    plan = _plan(request, plan_name)
    table = plan.model_table(version)
    build_window(generated, plan, version, dt.date(2024, 1, 1), dt.date(2024, 4, 1), "first")
    before = (table_checksum(generated, table), evidence_checksum(generated, plan, version))
    # 2024-01-01 .. 2024-03-31 = 31 + 29 + 31 = 91 evidence rows; the model is not empty
    assert before[1][0] == 91
    assert before[0][0] > 0

    build_window(generated, plan, version, dt.date(2024, 1, 1), dt.date(2024, 4, 1), "second")
    assert (table_checksum(generated, table), evidence_checksum(generated, plan, version)) == before

    # an overlapping sub-window crossing the leap day and a month end
    build_window(generated, plan, version, dt.date(2024, 2, 20), dt.date(2024, 3, 3), "third")
    assert (table_checksum(generated, table), evidence_checksum(generated, plan, version)) == before


def _copy_raw(source: duckdb.DuckDBPyConnection, target: duckdb.DuckDBPyConnection, folder):
    """Copy the raw tables into another warehouse file through Parquet files."""
    ensure_schema(target)
    ensure_tables(target)
    for table in TABLES:
        path = str(folder / f"{table}.parquet")
        source.execute(f"COPY {table} TO '{path}' (FORMAT parquet)")
        target.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{path}')")


@pytest.mark.parametrize(
    ("plan_name", "version"),
    [("daily_revenue", "legacy"), ("daily_revenue", "v2"), ("fct_orders", "v2")],
)
def test_day_by_day_equals_one_31_day_chunk(generated, tmp_path, request, plan_name, version):
    plan = _plan(request, plan_name)
    table = plan.model_table(version)
    first, end = dt.date(2024, 1, 1), dt.date(2024, 2, 1)
    daily = duckdb.connect(str(tmp_path / "day_by_day.duckdb"))
    try:
        _copy_raw(generated, daily, tmp_path)
        for offset in range((end - first).days):
            d = first + dt.timedelta(days=offset)
            build_window(daily, plan, version, d, d + dt.timedelta(days=1), f"day-{d}")
        build_window(generated, plan, version, first, end, "chunk")

        chunk_sums = (table_checksum(generated, table), evidence_checksum(generated, plan, version))
        daily_sums = (table_checksum(daily, table), evidence_checksum(daily, plan, version))
        assert chunk_sums[1][0] == 31  # January has 31 days, one evidence row each
        assert chunk_sums[0][0] > 0
        assert daily_sums == chunk_sums
    finally:
        daily.close()


# --------------------------------------------------------------------------------------------
# 4. A failure inside the write transaction changes nothing
# --------------------------------------------------------------------------------------------


def test_failure_after_delete_before_commit_leaves_previous_content(
    generated, daily_revenue, monkeypatch
):
    table = daily_revenue.model_table("v2")
    build_window(generated, daily_revenue, "v2", dt.date(2024, 1, 1), dt.date(2024, 2, 1), "r1")
    before_table = table_checksum(generated, table)
    before_evidence = evidence_checksum(generated, daily_revenue, "v2", all_columns=True)

    # Source change that a successful rebuild of the overlapping window would show.
    deleted = generated.execute(
        "DELETE FROM raw.orders WHERE CAST(order_ts AS DATE) = DATE '2024-01-20'"
    ).fetchone()[0]
    assert deleted > 0

    real_write_evidence = evidence_module.replace_window
    calls = []

    def write_then_fail(*args, **kwargs):
        real_write_evidence(*args, **kwargs)  # evidence rows deleted and re-inserted...
        calls.append(args)
        raise RuntimeError("killed before COMMIT")  # ...then the run dies

    with monkeypatch.context() as patch:
        patch.setattr(evidence_module, "replace_window", write_then_fail)
        with pytest.raises(RuntimeError, match="killed before COMMIT"):
            build_window(
                generated, daily_revenue, "v2", dt.date(2024, 1, 15), dt.date(2024, 2, 15), "r2"
            )
    assert calls, "the injected failure never ran"
    assert table_checksum(generated, table) == before_table
    assert evidence_checksum(generated, daily_revenue, "v2", all_columns=True) == before_evidence
    # the connection is usable again (no transaction left open)
    assert generated.execute("SELECT count(*) FROM backfill.partition_evidence").fetchone()[0] == 31

    # Positive control: the same rebuild without the failure does change the content.
    build_window(generated, daily_revenue, "v2", dt.date(2024, 1, 15), dt.date(2024, 2, 15), "r3")
    assert table_checksum(generated, table) != before_table
    assert evidence_checksum(generated, daily_revenue, "v2", all_columns=True) != before_evidence


# --------------------------------------------------------------------------------------------
# 5. Evidence
# --------------------------------------------------------------------------------------------

# Rows per day in the pilot window, from the expected tables above.
EXPECTED_ROW_COUNTS = {
    ("daily_revenue", "legacy"): {"2024-02-28": 1, "2024-02-29": 2, "2024-03-01": 1},
    ("daily_revenue", "v2"): {
        "2024-02-28": 1,
        "2024-02-29": 2,  # pilot + NULL region
        "2024-03-01": 1,
        "2024-03-02": 1,  # refund only
        "2024-03-05": 1,  # refund only
    },
    # fct_orders: ...01 on 02-28; ...02 ...03 ...04 ...05 on 02-29; ...06 ...07 on 03-01
    ("fct_orders", "legacy"): {"2024-02-28": 1, "2024-02-29": 4, "2024-03-01": 2},
    ("fct_orders", "v2"): {"2024-02-28": 1, "2024-02-29": 4, "2024-03-01": 2},
}


def test_evidence_has_one_row_per_day_with_counts_code_version_and_run_id(
    pilot, daily_revenue, fct_orders
):
    build_pilot_window(pilot, daily_revenue, fct_orders, run_id="run-evidence-7")
    plans = {"daily_revenue": daily_revenue, "fct_orders": fct_orders}
    for (model, version), counts in EXPECTED_ROW_COUNTS.items():
        rows = pilot.execute(
            "SELECT partition_start::DATE AS day, row_count, code_version, run_id "
            "FROM backfill.partition_evidence "
            "WHERE model = ? AND version = ? ORDER BY day",
            [model, version],
        ).fetchall()
        # 2024-02-26 .. 2024-03-07 = 4 days of February (26..29) + 7 of March = 11 rows
        assert [r[0] for r in rows] == WINDOW_DAYS
        assert len(rows) == 11
        assert {r[0].isoformat(): r[1] for r in rows} == {
            d.isoformat(): counts.get(d.isoformat(), 0) for d in WINDOW_DAYS
        }
        code_version = {"legacy": "legacy-2", "v2": "v2-2"}[version]
        assert plans[model].version(version).code_version == code_version
        assert {r[2] for r in rows} == {code_version}
        assert {r[3] for r in rows} == {"run-evidence-7"}


def test_evidence_is_replaced_not_duplicated_on_rebuild(pilot, daily_revenue, fct_orders):
    build_pilot_window(pilot, daily_revenue, fct_orders, run_id="run-a")
    build_window(pilot, daily_revenue, "v2", dt.date(2024, 2, 29), dt.date(2024, 3, 2), "run-b")
    rows = pilot.execute(
        "SELECT partition_start::DATE AS day, run_id FROM backfill.partition_evidence "
        "WHERE model = 'daily_revenue' AND version = 'v2' ORDER BY day"
    ).fetchall()
    assert [r[0] for r in rows] == WINDOW_DAYS
    assert {r[0].isoformat(): r[1] for r in rows if r[1] == "run-b"} == {
        "2024-02-29": "run-b",
        "2024-03-01": "run-b",
    }


def _changed(conn, plan: Plan) -> list[tuple[str, str]]:
    return [
        (c.partition.isoformat(), c.version) for c in changed_partitions(conn, plan, START, END)
    ]


def test_fingerprint_changes_only_for_days_a_moved_resend_touches(pilot, daily_revenue, fct_orders):
    build_pilot_window(pilot, daily_revenue, fct_orders)
    assert _changed(pilot, daily_revenue) == []
    assert _changed(pilot, fct_orders) == []

    # A late re-send of ...04 (no refunds) that moves it from 2024-02-29 to 2024-03-01.
    pilot.execute(
        "INSERT INTO raw.orders VALUES (9000000004, 9000003, NULL, "
        "TIMESTAMP '2024-03-01 02:00:00', 40.00, 'shipped', TIMESTAMP '2024-03-06 12:00:00')"
    )
    both_days = [
        ("2024-02-29", "legacy"),
        ("2024-02-29", "v2"),
        ("2024-03-01", "legacy"),
        ("2024-03-01", "v2"),
    ]
    assert _changed(pilot, daily_revenue) == both_days
    assert _changed(pilot, fct_orders) == both_days

    # Rebuilding those two days makes the evidence current again.
    for plan in (daily_revenue, fct_orders):
        for version in ("legacy", "v2"):
            build_window(pilot, plan, version, day("2024-02-29"), day("2024-03-02"), "repair")
    assert _changed(pilot, daily_revenue) == []
    assert _changed(pilot, fct_orders) == []


def test_fingerprint_of_refund_day_covers_all_versions_of_its_order(
    pilot, daily_revenue, fct_orders
):
    build_pilot_window(pilot, daily_revenue, fct_orders)
    # ...05 has refund 101 on 2024-03-05; moving ...05 to 2024-03-01 touches the daily_revenue
    # slices of 02-29 (old day), 03-01 (new day) and 03-05 (its refund's day), but only the
    # fct_orders slices of 02-29 and 03-01 (fct_orders does not read refunds).
    pilot.execute(
        "INSERT INTO raw.orders VALUES (9000000005, 9000002, 'pilot', "
        "TIMESTAMP '2024-03-01 08:00:00', 70.00, 'shipped', TIMESTAMP '2024-03-06 12:00:00')"
    )
    assert [d for d, v in _changed(pilot, daily_revenue) if v == "v2"] == [
        "2024-02-29",
        "2024-03-01",
        "2024-03-05",
    ]
    assert [d for d, v in _changed(pilot, fct_orders) if v == "v2"] == [
        "2024-02-29",
        "2024-03-01",
    ]


# --------------------------------------------------------------------------------------------
# 6. Per-partition checks: known records
# --------------------------------------------------------------------------------------------


def _known(result) -> dict[str, dict]:
    return {d.partition.isoformat(): d.checks["known_records_match"] for d in result.partitions}


def test_known_records_pass_on_pilot(pilot, daily_revenue):
    result = build_window(pilot, daily_revenue, "v2", START, END, "r")
    known = _known(result)
    assert {d for d, k in known.items() if k["records_checked"]} == {"2024-02-29", "2024-03-05"}
    assert all(k["passed"] for k in known.values())
    # legacy is the baseline: the known records describe the candidate only
    legacy = build_window(pilot, daily_revenue, "legacy", START, END, "r")
    assert all("known_records_match" not in d.checks for d in legacy.partitions)


def test_known_record_mismatch_fails_that_day_only_and_names_the_key(pilot, daily_revenue):
    # ...05 becomes 75.00: 02-29 pilot is then 1 order, gross 75, net 75 (expected 70)
    pilot.execute("UPDATE raw.orders SET amount = 75.00 WHERE order_id = 9000000005")
    result = build_window(pilot, daily_revenue, "v2", START, END, "r")
    known = _known(result)
    assert [d for d, k in known.items() if not k["passed"]] == ["2024-02-29"]
    assert known["2024-03-05"]["passed"]  # refund 101 is still 20
    (mismatch,) = known["2024-02-29"]["mismatches"]
    assert mismatch["key"] == {"order_date": "2024-02-29", "region": "pilot"}
    assert Decimal(mismatch["actual"]["gross_revenue"]) == Decimal("75")
    assert Decimal(mismatch["actual"]["net_revenue"]) == Decimal("75")
    assert Decimal(mismatch["expected"]["gross_revenue"]) == Decimal("70")
    # the verdict travels in the evidence too
    stored = pilot.execute(
        "SELECT checks->'known_records_match'->>'passed' FROM "
        "backfill.partition_evidence "
        "WHERE model = 'daily_revenue' AND version = 'v2' AND partition_start = DATE '2024-02-29'"
    ).fetchone()[0]
    assert stored == "false"


# --------------------------------------------------------------------------------------------
# 7. A missing source table
# --------------------------------------------------------------------------------------------


def _snapshot(conn, plan: Plan) -> tuple:
    return (
        table_checksum(conn, plan.model_table("v2")),
        evidence_checksum(conn, plan, "v2", all_columns=True),
    )


@pytest.mark.parametrize(
    ("plan_name", "dropped"),
    [("daily_revenue", "raw.refunds"), ("fct_orders", "raw.customers")],
)
def test_missing_source_table_raises_and_keeps_previous_content(pilot, request, plan_name, dropped):
    plan = _plan(request, plan_name)
    build_window(pilot, plan, "v2", START, END, "good")
    before = _snapshot(pilot, plan)
    assert before[0][0] > 0

    pilot.execute(f"DROP TABLE {dropped}")
    try:
        with pytest.raises(BuildError) as error:
            build_window(pilot, plan, "v2", START, END, "bad")
        message = str(error.value)
        assert dropped.split(".")[1] in message
        assert f"{plan_name}/v2" in message
    finally:
        assert _snapshot(pilot, plan) == before


@pytest.mark.parametrize(
    ("plan_name", "table", "column"),
    [("daily_revenue", "raw.refunds", "refund_ts"), ("fct_orders", "raw.customers", "valid_from")],
)
def test_missing_source_column_raises_and_keeps_previous_content(
    pilot, request, plan_name, table, column
):
    plan = _plan(request, plan_name)
    build_window(pilot, plan, "v2", START, END, "good")
    before = _snapshot(pilot, plan)
    assert before[0][0] > 0

    pilot.execute(f"ALTER TABLE {table} RENAME COLUMN {column} TO renamed_{column}")
    with pytest.raises(BuildError) as error:
        build_window(pilot, plan, "v2", START, END, "bad")
    message = str(error.value)
    assert f"{plan_name}/v2" in message
    assert column in message  # DuckDB's binder error names the column it cannot find
    assert table in message  # and the message points at the source tables to check
    assert _snapshot(pilot, plan) == before


def test_reversed_or_empty_window_is_refused(pilot, daily_revenue):
    with pytest.raises(BuildError, match="end must be after start"):
        build_window(pilot, daily_revenue, "v2", END, START, "r")
    with pytest.raises(BuildError, match="before the first partition"):
        build_window(pilot, daily_revenue, "v2", dt.date(2023, 12, 31), END, "r")


def test_evidence_table_of_an_older_release_is_brought_up_to_date(pilot, daily_revenue):
    """A warehouse whose evidence an older release wrote: partitions keyed by ``day`` (every plan
    was daily), the loaded column named after one source's (``source_max_ingested_at``), no
    ``build_seconds``. The next build renames and adds the columns, keeps the old rows and
    writes its own next to them."""
    pilot.execute("CREATE SCHEMA IF NOT EXISTS backfill")
    pilot.execute("DROP TABLE IF EXISTS backfill.partition_evidence")
    pilot.execute(
        "CREATE TABLE backfill.partition_evidence (model VARCHAR NOT NULL, "
        "version VARCHAR NOT NULL, day DATE NOT NULL, row_count BIGINT NOT NULL, "
        "source_rows BIGINT NOT NULL, source_max_ingested_at TIMESTAMP, "
        "source_fingerprint VARCHAR NOT NULL, code_version VARCHAR NOT NULL, "
        "checks_passed BOOLEAN NOT NULL, checks JSON NOT NULL, applied BOOLEAN NOT NULL, "
        "run_id VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL)"
    )
    pilot.execute(
        "INSERT INTO backfill.partition_evidence VALUES ('daily_revenue', 'legacy', "
        "DATE '2024-01-05', 3, 9, TIMESTAMP '2024-01-06 01:00', '9:123', 'legacy-1', true, "
        "'{}', true, 'old-run', TIMESTAMP '2024-01-07 00:00')"
    )

    build_window(pilot, daily_revenue, "v2", day("2024-02-29"), day("2024-03-02"), "new-run")

    rows = pilot.execute(
        "SELECT run_id, partition_start, partition_end, row_count, "
        "if(run_id = 'old-run', source_max_loaded_at, NULL), build_seconds IS NULL "
        "FROM backfill.partition_evidence ORDER BY partition_start"
    ).fetchall()
    midnight = dt.datetime.fromisoformat
    assert rows == [
        # The old row: its day as a timestamp, a day long, its figures as they were.
        (
            "old-run",
            midnight("2024-01-05"),
            midnight("2024-01-06"),
            3,
            midnight("2024-01-06 01:00"),
            True,
        ),
        # The new build's two days (the module docstring's rows): 02-29 keeps ...04 (NULL
        # region) and ...05 (pilot); ...02 is cancelled, ...03 a test and ...06 moved to 03-01
        # -> 2 rows. 03-01 has ...06 and ...07 (pilot); ...02's refund goes with it -> 1 row.
        ("new-run", midnight("2024-02-29"), midnight("2024-03-01"), 2, None, False),
        ("new-run", midnight("2024-03-01"), midnight("2024-03-02"), 1, None, False),
    ]
