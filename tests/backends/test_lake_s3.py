"""DuckLake with its data files on S3-compatible object storage (a moto server on loopback), the
credentials a DuckDB persistent secret, as deploy/README.md describes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines.factory import resources
from pipelines.rows import Rows
from pipelines.sql import PARTITION
from pipelines.warehouse import Warehouse, WarehouseUnavailable, Write, ducklake

from .conftest import Lake
from .pgcluster import free_port

boto3 = pytest.importorskip("boto3", reason="the S3 test needs moto[server] (the dev extra)")


@pytest.fixture
def s3_bucket(tmp_path: Path, monkeypatch) -> str:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="k",
                     aws_secret_access_key="s", region_name="us-east-1").create_bucket(Bucket="lake")
        monkeypatch.setenv("HOME", str(tmp_path / "user"))  # DuckDB keeps persistent secrets under ~/.duckdb
        con = duckdb.connect()
        con.execute(f"LOAD '{ducklake.extension_path('httpfs')}'")
        con.execute(f"""CREATE PERSISTENT SECRET provline_lake (TYPE s3, KEY_ID 'k', SECRET 's', REGION 'us-east-1',
                        ENDPOINT '127.0.0.1:{port}', URL_STYLE 'path', USE_SSL false, SCOPE 's3://lake')""")
        con.close()
        yield f"http://127.0.0.1:{port}"
    finally:
        ducklake.close_all()
        server.terminate()
        server.wait()


@pytest.mark.slow
def test_data_files_on_s3_compatible_storage(lake: Lake, s3_bucket: str, monkeypatch):
    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", "s3://lake/warehouse/")
    warehouse = Warehouse.from_settings()
    warehouse.setup_for_execution(None)  # the probe object goes to the bucket
    rows = pd.DataFrame({"day": pd.to_datetime(["2013-01-01"] * 20), "v": range(20), PARTITION: "2013-01-01"})
    write = Write(table="raw.t", partition_expr="day", columns={"day": "DATE", "v": "BIGINT"}, code_version="c",
                  run_id="r", partitions=["2013-01-01"], rows=Rows.load(rows))
    receipt = warehouse.commit(write)["2013-01-01"]
    client = boto3.client("s3", endpoint_url=s3_bucket, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="lake")["Contents"]]
    assert any(k.startswith("warehouse/raw/t/") and k.endswith(".parquet") for k in keys)
    with warehouse.connect() as con:
        assert warehouse.read_version(con, "raw.t", "2013-01-01", receipt.content_hash, "day").num_rows == 20

    ducklake.close_all()
    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", "s3://lake/elsewhere/")  # the catalog keeps its first path
    with pytest.raises(WarehouseUnavailable, match="does not match existing data path"):
        Warehouse.from_settings().setup_for_execution(None)


@pytest.mark.slow
def test_the_monitor_sensor_probes_the_object_store_once_per_process(lake: Lake, s3_bucket: str, monkeypatch):
    """Every `provline_monitor` tick sets the warehouse resource up (Dagster calls setup_for_execution): the write
    probe goes to the bucket on the first tick only, whatever new resource instance the next ticks get."""
    import dagster as dg

    from pipelines.monitor.sensors import monitor_sensor

    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", "s3://lake/warehouse/")
    client = boto3.client("s3", endpoint_url=s3_bucket, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
    probe = f"warehouse/{ducklake.PROBE}.parquet"
    sensor, instance = monitor_sensor([]), dg.DagsterInstance.ephemeral()

    def tick() -> list[str]:
        sensor.evaluate_tick(dg.build_sensor_context(instance=instance,
                                                     resources=resources()))
        return [o["Key"] for o in client.list_objects_v2(Bucket="lake").get("Contents", [])]

    assert probe in tick()
    client.delete_object(Bucket="lake", Key=probe)
    assert probe not in tick() and probe not in tick()
    ducklake.close_all()  # as a new process would
    assert probe in tick()
