"""Keeping up with a real Engage space, simulated: many audiences at LaunchDarkly's 5 requests a second.

The product's sync on bench/first_sync.py's simulation (DynamoDB's limits, LaunchDarkly's windows and
Lambda's CPU enforced), with the issue "Keep up with a real Engage space"'s scenarios: a steady trickle
over many audiences, and a recompute of many small audiences arriving interleaved. `make bench` runs them
smaller; `make bench-long` at the issue's sizes. Each run is priced per million changes (bench/cost.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

from bench.common import Figure, Section, Settings, fmt, table
from bench.cost import COST_HEADER, COST_TARGET, PRICES, SEGMENT_BATCH, cost, cost_rows
from bench.first_sync_section import run_child
from bench.sim_scenario import DEFAULTS, Scenario

DEFERRALS_A_CHANGE = 0.1
SLACK = 1.2  # requests and time within 1.2 x what LaunchDarkly's rate allows


@dataclass(frozen=True)
class KeepUp:
    name: str
    scenario: Scenario

    @property
    def rate_seconds(self) -> float:
        """How long LaunchDarkly's rate needs for one request per audience."""
        return self.scenario.audiences / self.scenario.ld_limit


def scenarios(long: bool) -> list[KeepUp]:
    steady_seconds, audiences = (600, 500) if long else (120, 100)
    many, members = (10_000, 100) if long else (1_000, 20)
    return [
        KeepUp(
            f"steady 50 changes/s over {audiences:,} audiences for {steady_seconds // 60} min",
            replace(DEFAULTS, changes=50 * steady_seconds, arrival_rate=50.0, audiences=audiences),
        ),
        KeepUp(
            f"{many:,} audiences x {members} members, interleaved",
            replace(DEFAULTS, changes=many * members, arrival_rate=5000.0, audiences=many),
        ),
    ]


def run(settings: Settings) -> Section:
    target = "make bench-long" if settings.long else "make bench"
    section = Section("keep_up", "Keeping up with many audiences (simulated)", _command(settings))
    chosen = scenarios(settings.long)
    if settings.quick:
        chosen = [replace(k, scenario=replace(k.scenario, changes=k.scenario.changes // 20)) for k in chosen]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one scenario per core
        outcomes = list(pool.map(lambda k: run_child(k.scenario), chosen))
    section.outcomes = [(k.name, o) for k, o in zip(chosen, outcomes, strict=True)]
    judged = None if settings.quick else True
    rows, costs = [], []
    for k, o in zip(chosen, outcomes, strict=True):
        s = o.scenario
        lag_target = 2 * k.rate_seconds
        time_target = SLACK * max(k.rate_seconds, s.changes / s.arrival_rate)
        steady = k.name.startswith("steady")
        section.figures += [
            Figure(
                f"{k.name}: lag after the last arrival",
                "s",
                [o.lag_seconds],
                lag_target if steady and judged else None,
                "lower",
            )
            if steady
            else Figure(f"{k.name}: time to sync", "s", [o.total_seconds], time_target if judged else None, "lower"),
            Figure(
                "  LaunchDarkly requests",
                "requests",
                [float(o.launchdarkly_requests)],
                (SLACK * (o.rate_allows if steady else s.audiences)) if judged else None,
                "lower",
                digits=0,
            ),
            Figure(
                "  deferrals (ticks + requeues) a change",
                "",
                [o.deferred / s.changes],
                DEFERRALS_A_CHANGE if steady and judged else None,
                "lower",
                digits=3,
            ),
            Figure("  final segments exactly the members (1 = yes)", "", [float(o.exact)], 1.0, "equal", digits=0),
        ]
        rows.append(
            [
                k.name,
                f"{fmt(s.changes, 0)} at {fmt(s.arrival_rate, 0)}/s",
                f"{o.total_seconds:.0f} s",
                f"{o.lag_seconds:.0f} s",
                f"{fmt(o.launchdarkly_requests, 0)} / {fmt(o.optimum_requests, 0)} / {fmt(o.rate_allows, 0)}",
                fmt(o.launchdarkly_429, 0),
                f"{fmt(o.ticks, 0)} + {fmt(o.deferred - o.ticks, 0)}",
                fmt(o.invocations, 0),
                f"{o.write_units_per_change:.2f}",
                fmt(o.peak_partition_wcu, 0),
                fmt(o.peak_table_wcu, 0),
                fmt(o.dead_lettered, 0),
                "yes" if o.exact else "**NO**",
                target,
            ]
        )
        costs += cost_rows(k.name, o, target)
    section.details.append(
        "Scenarios of the issue, on bench/first_sync.py's simulation (module docstring: DynamoDB's throughput "
        "limits, LaunchDarkly's 10-s windows of 50 requests and Lambda's CPU enforced; SQS, API Gateway and log "
        "bytes only counted) at the template's defaults. Lag = last change acknowledged after the last arrival "
        "(target for the steady one: 2 x audiences ÷ 5 requests/s). Requests = all LaunchDarkly requests / the "
        "optimum (one per audience per 1,000 members) / what the rate allows over the run (5 a second x the run). "
        "Deferrals = ticks + requeues the sync queued. WCU = write units in the busiest second of one partition "
        "key (DynamoDB's limit: 1,000) and of the table (a new table's: 4,000).\n\n"
        + table(
            [
                "scenario",
                "changes",
                "time",
                "lag",
                "LD requests / optimum / rate allows",
                "429s",
                "ticks + requeues",
                "invocations",
                "write units / change",
                "peak WCU / partition",
                "peak WCU / table",
                "DLQ",
                "exact",
                "made by",
            ],
            rows,
        )
    )
    section.details.append("**Cost per million changes.** " + PRICES + "\n\n" + table(COST_HEADER, costs))
    batched = [cost(o, SEGMENT_BATCH).total for o in outcomes]
    section.figures.append(
        Figure(
            "cost per million changes, batched (worst scenario)",
            "$",
            [max(batched)],
            COST_TARGET if judged else None,
            "lower",
            digits=2,
        )
    )
    section.headline = (
        "; ".join(
            f"{k.name}: {o.total_seconds:.0f} s (lag {o.lag_seconds:.0f} s), "
            f"{fmt(o.launchdarkly_requests, 0)} requests, "
            f"{'exact' if o.exact else 'NOT exact'}"
            for k, o in zip(chosen, outcomes, strict=True)
        )
        + f"; ${max(batched):.2f} per million changes batched."
    )
    section.details.append(
        "Reproduce a row: `.venv/bin/python -m bench.first_sync '" + _json(chosen[0].scenario) + "'`."
    )
    return section


def _json(scenario: Scenario) -> str:
    import json

    return json.dumps(asdict(scenario))


def _command(settings: Settings) -> str:
    return (
        ".venv/bin/python -m bench --long --only keep_up"
        if settings.long
        else ".venv/bin/python -m bench --only keep_up"
    )
