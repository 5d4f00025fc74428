"""Writes a run's results: JSON (everything), a markdown table per protocol and a PNG bar chart."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["BPR_ML100K", "markdown", "plot", "write_all"]

# RecBole's published BPR on ML-100K under its default protocol (random 8:1:1, full ranking).
BPR_ML100K = {"recall@10": 0.2523, "ndcg@10": 0.2920, "mrr@10": 0.4855, "hit@10": 0.7953}

_COLUMNS = [(f"{m}@{k}", f"{label}@{k}") for k in (10, 20)
            for m, label in (("recall", "R"), ("ndcg", "N"), ("mrr", "MRR"), ("hit", "Hit"), ("precision", "P"))]
_PLOTTED = ("recall@10", "ndcg@10", "mrr@10", "hit@10")


def _cell(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """One table per protocol: every strategy, every metric, coverage, diversity, latency."""
    out = [f"# hybridrec offline evaluation: {results['dataset']}", "",
           f"{results['items']} items, {results['interactions']} interactions; "
           f"model {results['settings']['model']}, half-life {results['settings']['half_life_days']} days; "
           f"run took {results['wall_s']:.0f} s.", ""]
    for run in results["protocols"]:
        header = ["strategy"] + [label for _, label in _COLUMNS] + ["Cov@10", "Cov@20", "ILD@10", "p50 ms", "p95 ms"]
        out += [f"## protocol: {run['protocol']} (scored on {run['target']}, {run['users']} users)", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, row in run["strategies"].items():
            cells = [name] + [_cell(row["metrics"].get(key)) for key, _ in _COLUMNS]
            cells += [_cell(row.get("coverage@10")), _cell(row.get("coverage@20")), _cell(row.get("diversity@10")),
                      _cell(row["latency_ms"]["p50"], 2), _cell(row["latency_ms"]["p95"], 2)]
            out.append("| " + " | ".join(cells) + " |")
        for metric, pairs in run.get("paired", {}).items():
            shown = "; ".join(f"{pair} {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                              for pair, d in pairs.items())
            out += ["", f"Paired per-user {metric} differences, mean [95% interval]: {shown}."]
        if results["dataset"] == "ml-100k" and run["protocol"] == "recbole":
            ref = ", ".join(f"{k} {v}" for k, v in BPR_ML100K.items())
            out += ["", f"Reference, RecBole's published BPR on ML-100K under this protocol: {ref}."]
        references = run.get("references", {})
        if references.get("als"):
            best = references["als"]["selected"]
            out += ["", f"ALS configuration (best validation NDCG@10 of {len(references['als']['grid'])}): "
                        f"factors={best['factors']}, regularization={best['regularization']}, alpha={best['alpha']}, "
                        f"iterations={best['iterations']}."]
        if references.get("ease"):
            out += ["", f"Dense EASE reference: lambda={references['ease']['lambda']} (best validation NDCG@10 of "
                        f"{[row['lambda'] for row in references['ease']['grid']]})."]
        out += _cold_section(run.get("cold_items"))
        model = run.get("model")
        if model:
            out += ["", f"Served model v{model['version']}: trained from {model['events']} events in the events "
                        f"index in {model['train_s']} s ({model['end_to_end_s']} s with promotion); chosen on its "
                        f"held-out events: {model['params']}; held-out metrics {model['metrics']}."]
        out.append("")
    out += ["Strategies:", ""]
    first = results["protocols"][0]["strategies"] if results["protocols"] else {}
    out += [f"- `{name}`: {row['describe']}" for name, row in first.items()]
    return "\n".join(out) + "\n"


def _cold_section(cold: dict[str, Any] | None) -> list[str]:
    """The cold-item experiment: every strategy scored on the hidden items alone."""
    if not cold:
        return []
    out = ["", f"### Cold items ({cold['fraction']:.0%} of the items, {cold['items']} items, seed {cold['seed']}): "
               f"{cold['users']} users with {cold['targets']} cold target items", "",
           "Every interaction of these items was hidden from the events, profiles and model; the table above "
           "is scored under the same hiding. Here the relevant set is each user's target items that are cold.", "",
           "| strategy | R@10 | N@10 | Hit@10 | R@20 | N@20 | cold share of top 10 | cold items shown @10 |",
           "|---|---|---|---|---|---|---|---|"]
    for name, row in cold["strategies"].items():
        m = row["metrics"]
        out.append("| " + " | ".join([name, *(_cell(m.get(k)) for k in ("recall@10", "ndcg@10", "hit@10",
                                                                         "recall@20", "ndcg@20")),
                                      _cell(row.get("cold_share@10")), _cell(row.get("cold_coverage@10"))]) + " |")
    if cold.get("paired"):
        shown = "; ".join(f"{pair} {metric} {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                          for pair, by_metric in cold["paired"].items() for metric, d in by_metric.items())
        out += ["", f"Paired per-user differences on cold items, mean [95% interval]: {shown}."]
    factors = cold.get("factors")
    if factors:
        out += ["", f"Serving slot `{factors['slot_field']}`: {factors['cold_with_factors']} cold items carry "
                    f"factors ({factors['cold_without_factors']} without), {factors['warm_with_factors']} warm "
                    f"({factors['warm_without_factors']} without); item-item weights: "
                    f"{factors.get('cold_with_neighbours', '-')} cold, "
                    f"{factors.get('warm_with_neighbours', '-')} warm; "
                    f"factor norm mean / p50 / p90: cold "
                    f"{factors['cold_norm']['mean']:.3f} / {factors['cold_norm']['p50']:.3f} / "
                    f"{factors['cold_norm']['p90']:.3f}, warm {factors['warm_norm']['mean']:.3f} / "
                    f"{factors['warm_norm']['p50']:.3f} / {factors['warm_norm']['p90']:.3f}."]
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """Grouped bars of the @10 metrics, one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    runs = results["protocols"]
    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(7 * max(1, len(runs)), 4.5), squeeze=False)
    # No runs still draws one empty panel.
    for ax, run in zip(axes[0], runs, strict=False):
        names = list(run["strategies"])
        width = 0.8 / len(_PLOTTED)
        top = 0.0
        for i, metric in enumerate(_PLOTTED):
            values = [run["strategies"][n]["metrics"].get(metric, 0.0) for n in names]
            top = max([top, *values])
            ax.bar([x + i * width for x in range(len(names))], values, width, label=metric)
        ax.set_xticks([x + width * (len(_PLOTTED) - 1) / 2 for x in range(len(names))], names, rotation=20)
        ax.set_title(f"{results['dataset']}: {run['protocol']} ({run['target']}, {run['users']} users)")
        ax.set_ylim(0, min(1.0, top * 1.15) or 1.0)  # own scale: leave-last-out scores are far lower
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """results.json, results.md and results.png in out_dir (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "plot": out_dir / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    plot(results, paths["plot"])
    return paths
