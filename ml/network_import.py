"""``traffic network import``: check a user's readings, locations and road graph, and write a network directory.

Inputs (local paths or ``hdfs://`` URLs; docs/networks.md has a worked example):

- **readings**: a long table with columns ``sensor_id, time, speed`` as CSV or
  Parquet, or the wide ``.npz`` / ``.h5`` forms ``load_metrla`` reads. Times
  are ISO dates-times (local wall-clock; a time-zone offset is dropped, keeping
  the wall-clock time, since the features read time of day from it) or epoch
  seconds or milliseconds. An empty or NaN speed, or 0, is missing.
- **locations**: CSV ``sensor_id,latitude,longitude``.
- **graph** (optional): an edge-list CSV ``from,to[,weight|cost]``, an ``.npz``
  with ``adjacency`` and ``sensor_ids``, or DCRNN's ``adj_mx.pkl`` (a pickle:
  only from a source you trust). Without one, the graph is built from the
  locations (``ml.network_graph.from_locations``).

Every problem is one line: unknown sensors in the readings, duplicate
(sensor, time) rows, irregular steps, missing or invalid locations, a graph
without some sensor. The step length is read from the data; the split is
given by fractions of the windows (default 0.7,0.1,0.2, the standard
protocol's) or by two dates.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.dataset import STEP_MS, Split, load_metrla, read_bytes
from ml.exceptions import DataError
from ml.features import HISTORY_STEPS, steps_supported, window_target_steps
from ml.network import MANIFEST, parse_time_ms, write_manifest
from ml.network_graph import NEAREST, from_edges, from_locations

__all__ = ["ImportedNetwork", "import_network", "parse_split", "read_locations", "read_long_readings", "step_of",
           "split_by_fractions"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ImportedNetwork:
    root: Path
    sensors: int
    steps: int
    step_ms: int
    missing_share: float
    split: Split
    links: int
    summary: str


def _frame(path: str, hdfs_options: dict | None):  # noqa: ANN202 - a pandas DataFrame
    import pandas as pd

    data = read_bytes(path, hdfs_options)
    try:
        if path.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data), dtype={"sensor_id": str, "from": str, "to": str})
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many types for bad files
        raise DataError(f"{path} is not a readable {'Parquet' if path.endswith('.parquet') else 'CSV'} file: "
                        f"{type(exc).__name__}") from None


def _require(frame, columns: tuple[str, ...], path: str) -> None:  # noqa: ANN001
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; expected {', '.join(columns)}")


def _times_ms(column, path: str) -> np.ndarray:  # noqa: ANN001
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise DataError(f"{path}: row {int(np.flatnonzero(~np.isfinite(values))[0]) + 2} has no time")
        return (values * (1 if np.nanmax(np.abs(values)) > 1e11 else 1000)).astype(np.int64)
    try:
        parsed = pd.to_datetime(column, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: a time is not an ISO date-time or epoch number ({exc})") from None
    if parsed.isna().any():
        raise DataError(f"{path}: row {int(np.flatnonzero(parsed.isna().to_numpy())[0]) + 2} has no time")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed.dt.as_unit("ms").astype("int64").to_numpy()


def step_of(times_ms: np.ndarray, path: str) -> int:
    """The step length of sorted unique ``times_ms``: their most common gap, which every gap must be a multiple of."""
    if len(times_ms) < 2:
        raise DataError(f"{path}: fewer than two distinct times; cannot tell the step length")
    gaps = np.diff(times_ms)
    values, counts = np.unique(gaps, return_counts=True)
    step = int(values[np.argmax(counts)])
    off = np.flatnonzero(gaps % step != 0)
    if len(off):
        at = int(off[0]) + 1
        raise DataError(f"{path}: irregular steps: {np.datetime64(int(times_ms[at]), 'ms')} is "
                        f"{gaps[at - 1] / 60_000:g} min after the previous time; the step is {step / 60_000:g} min")
    return step


def read_long_readings(path: str, hdfs_options: dict | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(speed (T, N) with 0 = missing, times_ms (T,) on the step grid, sensor ids) from a long table."""
    import pandas as pd

    frame = _frame(path, hdfs_options)
    _require(frame, ("sensor_id", "time", "speed"), path)
    if frame.empty:
        raise DataError(f"{path} has no readings")
    sensor = frame["sensor_id"].astype(str).str.strip().to_numpy()
    times = _times_ms(frame["time"], path)
    speed = pd.to_numeric(frame["speed"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(speed) & frame["speed"].notna().to_numpy())
    if len(bad):
        value = frame["speed"].iloc[bad[0]]
        raise DataError(f"{path}: row {int(bad[0]) + 2} has a speed that is not a number: {value!r}")
    if np.any(speed < 0):
        raise DataError(f"{path}: {int((speed < 0).sum())} negative speeds, e.g. row {int(np.argmax(speed < 0)) + 2}")
    keys = pd.DataFrame({"s": sensor, "t": times})
    dup = keys.duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise DataError(f"{path}: {int(dup.sum())} duplicate (sensor, time) rows, first: sensor {sensor[i]} at "
                        f"{np.datetime64(int(times[i]), 'ms')} (row {i + 2})")
    grid_times = np.unique(times)
    step = step_of(grid_times, path)
    grid = np.arange(grid_times[0], grid_times[-1] + step, step, dtype=np.int64)
    ids, column = np.unique(sensor, return_inverse=True)
    wide = np.zeros((len(grid), len(ids)))
    values = np.where(np.isfinite(speed), speed, 0.0)
    wide[(times - grid[0]) // step, column] = values
    return wide, grid, tuple(str(s) for s in ids)


def read_locations(path: str, hdfs_options: dict | None = None) -> dict[str, tuple[float, float]]:
    """{sensor_id: (latitude, longitude)} in file order, or a one-line DataError."""
    import pandas as pd

    frame = _frame(path, hdfs_options)
    _require(frame, ("sensor_id", "latitude", "longitude"), path)
    ids = frame["sensor_id"].astype(str).str.strip().to_numpy()
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}: sensor {ids[int(np.argmax(dup))]} is listed {int((ids == ids[np.argmax(dup)]).sum())}"
                        " times")
    lat = pd.to_numeric(frame["latitude"], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(frame["longitude"], errors="coerce").to_numpy(dtype=np.float64)
    invalid = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
    if invalid.any():
        raise DataError(f"{path}: missing or invalid locations for {int(invalid.sum())} sensors: "
                        f"{', '.join(ids[invalid][:5])}")
    return {sid: (float(a), float(b)) for sid, a, b in zip(ids, lat, lon, strict=True)}


def _readings(path: str, hdfs_options: dict | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], int]:
    if path.endswith((".npz", ".h5", ".hdf5")):
        data = load_metrla(path, hdfs_options)
        step = step_of(data.times_ms, path)
        grid = np.arange(data.times_ms[0], data.times_ms[-1] + step, step, dtype=np.int64)
        speed = np.zeros((len(grid), len(data.sensor_ids)))
        speed[(data.times_ms - grid[0]) // step] = np.where(np.isfinite(data.speed), data.speed, 0.0)
        return speed, grid, data.sensor_ids, step
    if path.endswith((".csv", ".parquet")):
        speed, grid, ids = read_long_readings(path, hdfs_options)
        return speed, grid, ids, int(grid[1] - grid[0])
    raise DataError(f"{path}: readings must be .csv or .parquet (long: sensor_id, time, speed) or .npz/.h5 (wide)")


def split_by_fractions(times_ms: np.ndarray, train: float, val: float, step_ms: int = STEP_MS) -> Split:
    """The protocol's split of a file's windows (12 in, out to the farthest horizon): the first ``train`` share,
    then ``val``; boundaries are window end times t."""
    windows = len(times_ms) - HISTORY_STEPS - window_target_steps(step_ms) + 1
    n_train = round(train * windows)
    n_test = round((1.0 - train - val) * windows)
    n_val = windows - n_train - n_test
    if n_train < 1 or n_val < 1:
        raise DataError(f"{len(times_ms)} steps give {max(windows, 0)} windows: too few for a training and a "
                        f"validation period at {train:g}/{val:g}")
    last_input = HISTORY_STEPS - 1
    val_end = times_ms[n_train + n_val + last_input] if n_test > 0 else times_ms[-1] + 1
    return Split(int(times_ms[n_train + last_input]), int(val_end))


def parse_split(text: str, times_ms: np.ndarray, step_ms: int = STEP_MS) -> tuple[Split, str]:
    """``--split``: fractions ``0.7,0.1,0.2`` (train, val, test) or two dates ``TRAIN_END,VAL_END``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        shares = [float(p) for p in parts]
    except ValueError:
        shares = None
    if shares is not None and len(shares) == 3:
        if any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
            raise DataError(f"--split fractions {text} must be three shares >= 0 that add up to 1")
        how = (f"fractions {shares[0]:g}/{shares[1]:g}/{shares[2]:g} of the windows (12 steps in, out to the "
               "farthest horizon) in time order; boundaries are the times t of a window's last input step")
        return split_by_fractions(times_ms, shares[0], shares[1], step_ms), how
    if shares is None and len(parts) == 2:
        split = Split(parse_time_ms(parts[0], "--split"), parse_time_ms(parts[1], "--split"))
        return split, f"dates: train before {parts[0]}, validation before {parts[1]}, test after (by a window's t)"
    raise DataError(f"--split {text!r}: give three fractions (0.7,0.1,0.2) or two dates (2012-05-01,2012-05-15)")


def _graph(path: str | None, ids: tuple[str, ...], locations: np.ndarray, nearest: int,
           hdfs_options: dict | None) -> tuple[np.ndarray, str]:
    if path is None:
        return from_locations(locations, nearest), (f"built from locations: a thresholded Gaussian kernel of "
                                                    f"great-circle distances to each sensor's {nearest} nearest")
    if path.endswith(".csv"):
        frame = _frame(path, hdfs_options)
        _require(frame, ("from", "to"), path)
        costs = frame["cost"].to_numpy(np.float64) if "cost" in frame.columns else None
        weights = frame["weight"].to_numpy(np.float64) if "weight" in frame.columns and costs is None else None
        adjacency, skipped = from_edges(ids, list(frame["from"].astype(str)), list(frame["to"].astype(str)),
                                        weights, costs)
        kind = "costs, thresholded Gaussian kernel" if costs is not None else "weights" if weights is not None \
            else "unweighted"
        return adjacency, f"edge list {Path(path).name} ({kind}; {skipped} edges of other sensors skipped)"
    if path.endswith((".npz", ".pkl")):
        order, matrix = _adjacency_file(path, hdfs_options)
        index = {sid: i for i, sid in enumerate(order)}
        missing = [sid for sid in ids if sid not in index]
        if missing:
            raise DataError(f"{path}: the graph has no row for {len(missing)} sensors: {', '.join(missing[:5])}")
        cols = [index[sid] for sid in ids]
        adjacency = np.asarray(matrix, dtype=np.float64)[np.ix_(cols, cols)].copy()
        np.fill_diagonal(adjacency, 1.0)
        return adjacency, f"adjacency {Path(path).name}"
    raise DataError(f"{path}: a graph must be an edge-list .csv, an .npz (adjacency, sensor_ids) or DCRNN's .pkl")


def _adjacency_file(path: str, hdfs_options: dict | None) -> tuple[list[str], np.ndarray]:
    data = read_bytes(path, hdfs_options)
    try:
        if path.endswith(".npz"):
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return [str(s) for s in npz["sensor_ids"]], np.asarray(npz["adjacency"])
        sensor_ids, _, matrix = pickle.loads(data, encoding="latin1")  # noqa: S301 - the user's own file, documented
        return [str(s) for s in sensor_ids], np.asarray(matrix)
    except (KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path} is not an adjacency file ({type(exc).__name__}: {exc})") from None


def import_network(readings: str, locations: str, *, name: str, output: Path, graph: str | None = None,
                   title: str | None = None, split: str = "0.7,0.1,0.2", nearest: int = NEAREST,
                   force: bool = False, hdfs_options: dict | None = None) -> ImportedNetwork:
    """Check the files and write the network directory ``output`` (``network.json`` last, so a failed import
    never leaves a directory that loads)."""
    if not _NAME.match(name):
        raise DataError(f"network name {name!r}: use lower-case letters, digits, '-' and '_' (at most 64)")
    if (output / MANIFEST).exists() and not force:
        raise DataError(f"network {output} exists; give --force to replace it")
    speed, times, ids, step = _readings(readings, hdfs_options)
    reason = steps_supported(step)
    if reason:
        raise DataError(f"{readings}: {reason}")
    where = read_locations(locations, hdfs_options)
    unknown = [sid for sid in ids if sid not in where]
    if unknown:
        raise DataError(f"{readings}: {len(unknown)} sensors have no location in {locations}: "
                        f"{', '.join(unknown[:5])}")
    present = set(ids)
    order = [sid for sid in where if sid in present]  # the locations file's order
    cols = [ids.index(sid) for sid in order]
    speed, ids = speed[:, cols], tuple(order)
    located = np.array([where[sid] for sid in ids], dtype=np.float64)
    chosen, split_how = parse_split(split, times, step)
    adjacency, graph_how = _graph(graph, ids, located, nearest, hdfs_options)
    from ml.road_graph import road_links

    links = len(road_links(adjacency))
    if output.exists() and force:
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output / "speed.npz", speed=speed, timestamps=times.astype("datetime64[ms]"),
                        sensor_ids=np.array(ids))
    with open(output / "sensors.csv", "w") as handle:
        handle.write("sensor_id,latitude,longitude\n")
        handle.writelines(f"{sid},{float(lat)!r},{float(lon)!r}\n"
                          for sid, (lat, lon) in zip(ids, located, strict=True))
    np.savez_compressed(output / "adjacency.npz", adjacency=adjacency, sensor_ids=np.array(ids))
    write_manifest(output, name=name, title=title or f"{name} traffic forecast", step_ms=step, split=chosen,
                   split_how=split_how, graph_how=graph_how)
    missing = float((speed == 0).mean())
    first, last = (np.datetime64(int(t), "ms").astype("datetime64[m]") for t in (times[0], times[-1]))
    dropped = len(where) - len(ids)
    summary = (f"network {name}: {len(ids)} sensors ({dropped} located without readings left out), "
               f"{len(times):,} steps of {step / 60_000:g} min from {first} to {last}, {missing:.1%} missing; "
               f"split train < {np.datetime64(chosen.train_end_ms, 'ms').astype('datetime64[m]')} <= val < "
               f"{np.datetime64(chosen.val_end_ms, 'ms').astype('datetime64[m]')}; graph {graph_how}, "
               f"{links} road links; written to {output}")
    return ImportedNetwork(output, len(ids), len(times), step, missing, chosen, links, summary)
