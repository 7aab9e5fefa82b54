"""Draws the ratio of each mount to the SDK ceiling, per scenario, from a benchmark JSON record.

Usage: python plot.py RECORD.json OUTPUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    record_path, output_path = sys.argv[1], sys.argv[2]
    with open(record_path, encoding="utf-8") as handle:
        record = json.load(handle)

    rows = [row for row in record["results"] if row.get("ratio") is not None]
    backends = [backend for backend in ("s3", "gcs") if any(row["backend"] == backend for row in rows)]
    if not backends:
        sys.exit("the record has no ratios to plot")

    figure, axes = plt.subplots(len(backends), 1, figsize=(12, 4.5 * len(backends)), squeeze=False)
    for axis, backend in zip(axes[:, 0], backends):
        backend_rows = [row for row in rows if row["backend"] == backend]
        scenarios = list(dict.fromkeys(row["scenario"] for row in backend_rows))
        targets = list(dict.fromkeys(row["target"] for row in backend_rows))
        width = 0.8 / len(targets)
        for offset, target in enumerate(targets):
            values = [next((row["ratio"] for row in backend_rows if row["scenario"] == scenario and row["target"] == target), 0) for scenario in scenarios]
            positions = [index + offset * width for index in range(len(scenarios))]
            axis.bar(positions, values, width, label=target)
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_xticks([index + 0.4 - width / 2 for index in range(len(scenarios))])
        axis.set_xticklabels(scenarios, rotation=20)
        axis.set_yscale("log")
        axis.set_ylabel("ratio to SDK (log scale, higher is better)")
        axis.set_title(f"{backend}: mounts relative to the direct SDK, {record['date']}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(output_path, dpi=110)


if __name__ == "__main__":
    main()
