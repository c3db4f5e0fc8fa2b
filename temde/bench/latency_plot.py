"""The latency figure: time vs T (log-log) per sweep, and the paper-shape bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temde.bench.cases import PAPER_BATCH, PAPER_DIM


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [k for k in result["sweeps"]]
    fig, axes = plt.subplots(1, len(sweeps) + 1, figsize=(5.2 * (len(sweeps) + 1), 4.3))
    colors = {"temde": "C0", "sa_text": "C1", "sa_visual": "C1", "mhsa": "C3", "mean": "C7"}
    for ax, key in zip(axes[:-1], sweeps):
        sw = result["sweeps"][key]
        for name, c in sw["cases"].items():
            ts = c["tokens"]
            ax.loglog(ts, c["fwd_ms"], "o-", color=colors.get(name), label=f"{name} fwd (slope {c['exponent_fwd']:.2f})")
            ax.loglog(ts, c["fwd_bwd_ms"], "s--", color=colors.get(name), alpha=0.6,
                      label=f"{name} fwd+bwd (slope {c['exponent_fwd_bwd']:.2f})")
        t0, t1 = sw["cases"]["temde"]["tokens"][0], sw["cases"]["temde"]["tokens"][-1]
        y0 = sw["cases"]["mhsa"]["fwd_ms"][-1]
        ax.loglog([t0, t1], [y0 * (t0 / t1) ** 2, y0], ":", color="k", lw=0.8, label="slope 2")
        ax.loglog([t0, t1], [y0 * (t0 / t1), y0], "-.", color="k", lw=0.8, label="slope 1")
        ax.set(xlabel="tokens T", ylabel="ms per batch", title=f"{key}: D={sw['dim']}, batch {sw['batch']}")
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.minorticks_off()
        ax.legend(fontsize=6.5)
        ax.grid(True, which="both", alpha=0.3)
    ax = axes[-1]
    labels, fwd, fb = [], [], []
    for row, r in result["paper"].items():
        for name, c in r["cases"].items():
            short = {"vsrn_image_encoder": "vsrn enc", "vsrn_gcn": "4 gcn", "vsrn_temde_replace": "temde"}
            labels.append(f"{short.get(row, row)}\n{short.get(name, name)}")
            fwd.append(c["fwd"]["median_ms"])
            fb.append(c["fwd_bwd"]["median_ms"])
    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, fwd, 0.4, label="fwd")
    ax.bar(pos + 0.2, fb, 0.4, label="fwd+bwd")
    ax.set_yscale("log")
    ax.set_xticks(pos, labels, fontsize=6.5)
    for row, r in result["paper"].items():
        sp = r[f"speedup_temde_vs_{r['baseline']}"]
        ax.plot([], [], " ", label=f"{row}: T-EMDE {sp['fwd']:.1f}x (fwd), {sp['fwd_bwd']:.1f}x (fwd+bwd) "
                                   f"faster than {r['baseline']}")
    ax.set(ylabel="ms per batch", title=f"paper shapes (batch {PAPER_BATCH}, D={PAPER_DIM})")
    ax.set_ylim(top=max(fb) * 30)  # room for the legend above the bars
    ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(f"T-EMDE vs self-attention pooling latency on {result['device_name']} ({result['dtype']}, "
                 f"{result['threads']} thread(s), torch {result['torch']}; {result['protocol']['clock']} time, median of "
                 f"{result['protocol']['paper_repeats']} runs at paper shapes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


