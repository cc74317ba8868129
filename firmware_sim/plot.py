"""A picture of one simulated patient: truth against what the devices sent, with the
labelled episodes shaded (decompensation build-up in red, hypoglycaemia in orange,
CGM compression lows in grey)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_sim.home import SimPatient

PANELS = (
    ("glucose", "glucose (mg/dL)", "cgm"),
    ("weight", "weight (kg)", "scale"),
    ("heart_rate", "heart rate (/min)", "wrist"),
    ("resp_rate", "respiratory rate (/min)", "wrist"),
    ("spo2", "SpO2 (%)", "wrist"),
    ("systolic", "systolic BP (mmHg)", "bp_cuff"),
    ("steps", "steps per day", "wrist"),
)
COLOURS = {
    "hf_decompensation": "#d62728",
    "hypoglycaemia": "#ff7f0e",
    "cgm_compression_low": "#7f7f7f",
}


def plot_patient(patient: SimPatient, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a gateway or in CI
    import matplotlib.pyplot as plt

    truth = patient.truth
    days = np.arange(truth.minutes) / 1440.0
    measured: dict[str, list[tuple[float, float]]] = {}
    for d in patient.devices:
        for upload in patient.uploads[d.device_id]:
            for name, _, t, value, _ in upload.records:
                key = (
                    name if not (d.device_type == "bp_cuff" and name == "heart_rate") else "cuff_hr"
                )
                measured.setdefault(key, []).append(((t - truth.start) / 86400.0, value))

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(13, 2.0 * len(PANELS)), sharex=True)
    for ax, (signal, label, _) in zip(axes, PANELS, strict=True):
        series = truth.signals[signal]
        if signal == "steps":
            per_day = np.add.reduceat(series, np.arange(0, truth.minutes, 1440))
            ax.bar(
                np.arange(len(per_day)) + 0.5, per_day, width=0.8, color="#9ecae1", label="truth"
            )
            sent = measured.get("steps", [])
            if sent:
                d_idx = np.array([int(t) for t, _ in sent])
                counts = np.bincount(d_idx, weights=[v for _, v in sent], minlength=len(per_day))
                ax.plot(np.arange(len(counts)) + 0.5, counts, "k.", ms=4, label="wrist")
        else:
            ax.plot(days, series, color="#1f77b4", lw=0.6, label="truth")
            points = measured.get(signal, [])
            if points:
                x, y = zip(*points, strict=True)
                ax.plot(x, y, "k.", ms=1.5 if len(points) > 2000 else 4, alpha=0.5, label="device")
        for e in patient.episodes:
            ax.axvspan(
                (e.onset - truth.start) / 86400.0,
                (e.peak - truth.start) / 86400.0,
                color=COLOURS.get(e.kind, "#cccccc"),
                alpha=0.15 if e.kind == "hf_decompensation" else 0.4,
                lw=0,
            )
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("day")
    p = patient.profile
    conditions = ", ".join(
        c
        for c, present in (
            ("heart failure", p.heart_failure),
            (f"diabetes {p.diabetes}", p.diabetes),
            ("hypertension", p.hypertension),
        )
        if present
    )
    fig.suptitle(
        f"{patient.patient_id} ({conditions}): truth (blue) vs devices (black); shaded:"
        " decompensation build-up (red), hypoglycaemia (orange), CGM compression low (grey)",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
