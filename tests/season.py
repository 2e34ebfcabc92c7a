"""A season of nights: a CRM that lives from one night to the next (each day some deals are
created, move on or back, are won or lost, have their close date pushed and get calls, and
one day a rep leaves) and the nightly runs, digests, a kill and backfills an operator sees.
The same seeds give the same season, so two warehouses can live it side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time as clock
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

OPEN_STAGES = ["待沟通", "发现机会", "明确需求", "购买决策"]
WON, LOST = "成单完成", "输单"


class CrmLife:
    """The day's changes, written to a native-schema CRM as its users would make them."""

    def __init__(self, url: str, seed: int = 1):
        self.engine = sa.create_engine(url)
        self.rng = np.random.default_rng(seed)

    def _read(self, sql: str) -> pd.DataFrame:
        with self.engine.connect() as db:
            return pd.read_sql(sa.text(sql), db)

    def live_day(self, day: date, rep_leaves: bool = False) -> None:
        """Changes made during `day` (the CRM stores UTC; the day's working hours)."""
        rng, moment = self.rng, datetime.combine(day, time(3, 0))
        deals = self._read("SELECT * FROM crm_opportunities ORDER BY opportunity_id")
        users = self._read("SELECT * FROM crm_users ORDER BY user_id")
        open_deals = deals[deals.status.eq("open")]
        reps = users[users.team_id.notna() & users.is_active.astype(bool)].user_id.to_numpy()
        last_stage = open_deals.opportunity_id[open_deals.stage.eq(OPEN_STAGES[-1])]
        win = rng.permutation(last_stage.to_numpy())[:1]
        others = open_deals.opportunity_id[~open_deals.opportunity_id.isin(win)]
        picked = rng.permutation(others.to_numpy())
        advance, back, lose, push = picked[:3], picked[3:4], picked[4:5], picked[5:7]
        stage_of = deals.set_index("opportunity_id").stage
        history, fields, updates = [], [], []

        def move(deal: str, to: str, at: datetime, status: str = "open") -> None:
            history.append((deal, at, to, stage_of[deal], "U00001"))
            closed = at if status != "open" else None
            updates.append({"o": deal, "stage": to, "status": status, "t": at, "closed": closed})
            if status != "open":
                fields.append((deal, "status", at, "open", status))

        for n, deal in enumerate(advance):
            position = OPEN_STAGES.index(stage_of[deal])
            to = OPEN_STAGES[min(position + 1, len(OPEN_STAGES) - 1)]
            if to != stage_of[deal]:
                move(deal, to, moment + timedelta(minutes=n))
        for deal in back:
            position = OPEN_STAGES.index(stage_of[deal])
            if position > 0:
                move(deal, OPEN_STAGES[position - 1], moment + timedelta(minutes=10))
        for deal in win:
            move(deal, WON, moment + timedelta(minutes=20), "won")
        for deal in lose:
            move(deal, LOST, moment + timedelta(minutes=30), "lost")
        with self.engine.begin() as db:
            for row in updates:
                db.execute(
                    sa.text(
                        "UPDATE crm_opportunities SET stage = :stage, status = :status, "
                        "updated_at = :t, closed_at = :closed, "
                        "lost_reason = CASE WHEN :status = 'lost' THEN '价格' END "
                        "WHERE opportunity_id = :o"
                    ),
                    row,
                )
            for deal in push:
                old = deals.set_index("opportunity_id").expected_close_date[deal]
                new = (pd.Timestamp(old) + pd.Timedelta(days=14)).date()
                at = moment + timedelta(minutes=40)
                fields.append(
                    (deal, "expected_close_date", at, str(pd.Timestamp(old).date()), str(new))
                )
                db.execute(
                    sa.text(
                        "UPDATE crm_opportunities SET expected_close_date = :d, updated_at = :t "
                        "WHERE opportunity_id = :o"
                    ),
                    {"d": new, "t": at, "o": deal},
                )
            self._create_deals(db, deals, reps, moment + timedelta(hours=1), history)
            db.execute(
                sa.text("INSERT INTO crm_stage_history VALUES (:o, :t, :to, :fr, :by)"),
                [dict(zip(("o", "t", "to", "fr", "by"), h)) for h in history],
            )
            if fields:
                db.execute(
                    sa.text("INSERT INTO crm_field_history VALUES (:o, :f, :t, :old, :new)"),
                    [dict(zip(("o", "f", "t", "old", "new"), f)) for f in fields],
                )
            self._log_calls(db, open_deals, moment + timedelta(hours=2))
            if rep_leaves:
                db.execute(
                    sa.text(
                        "UPDATE crm_users SET is_active = :no, left_at = :t, updated_at = :t "
                        "WHERE user_id = :u"
                    ),
                    {"no": False, "t": moment, "u": reps[0]},
                )

    def _create_deals(
        self, db: sa.Connection, deals: pd.DataFrame, reps: np.ndarray, at: datetime, history: list
    ) -> None:
        accounts = self._read("SELECT account_id FROM crm_accounts").account_id.to_numpy()
        first = int(deals.opportunity_id.str[1:].astype(int).max()) + 1
        for n in range(2):
            deal = f"O{first + n:07d}"
            owner = str(self.rng.choice(reps))
            created = at + timedelta(minutes=n)
            db.execute(
                sa.text(
                    "INSERT INTO crm_opportunities (opportunity_id, name, account_id, owner_id, "
                    "pipeline, stage, status, amount, currency, expected_close_date, created_at, "
                    "updated_at, closed_at, lead_source, is_deleted) VALUES (:o, :name, :a, "
                    ":owner, 'default', :stage, 'open', :amount, 'CNY', :close, :t, :t, NULL, "
                    "'官网', :no)"
                ),
                {
                    "o": deal,
                    "name": f"新项目 {deal}",
                    "a": str(self.rng.choice(accounts)),
                    "owner": owner,
                    "stage": OPEN_STAGES[0],
                    "amount": float(self.rng.integers(20, 500) * 1000),
                    "close": (created + timedelta(days=60)).date(),
                    "t": created,
                    "no": False,
                },
            )
            history.append((deal, created, OPEN_STAGES[0], None, owner))

    def _log_calls(self, db: sa.Connection, open_deals: pd.DataFrame, at: datetime) -> None:
        last = self._read("SELECT MAX(activity_id) AS id FROM crm_activities").id.iat[0]
        first = int(last[1:]) + 1
        called = open_deals.sample(min(5, len(open_deals)), random_state=self.rng.integers(1 << 31))
        db.execute(
            sa.text("INSERT INTO crm_activities VALUES (:id, :o, :a, :owner, 'call', :t, :t)"),
            [
                {
                    "id": f"X{first + n:07d}",
                    "o": r.opportunity_id,
                    "a": r.account_id,
                    "owner": r.owner_id,
                    "t": at + timedelta(minutes=n),
                }
                for n, r in enumerate(called.itertuples())
            ],
        )


SEASON_START = date(2026, 9, 28)  # a Monday; the nights cross 30 September and 31 October
NIGHTS = 40
KILLED_NIGHT = 20
BACKFILL_NIGHT = 30
REP_LEAVES_NIGHT = 26
KILL_DURING_LOAD = textwrap.dedent("""
    import os, signal, sys
    from datetime import date
    import loudou.warehouse as warehouse

    for backend in (warehouse.DuckDBWarehouse, warehouse.PostgresWarehouse):
        def apply_then_die(self, con, write, original=backend._apply_one):
            written = original(self, con, write)
            if write.table == "fct_stage_interval":  # half-way through the load
                os.kill(os.getpid(), signal.SIGKILL)
            return written
        backend._apply_one = apply_then_die
    from flows.nightly import nightly
    nightly(config=sys.argv[1], as_of=date.fromisoformat(sys.argv[2]))
""")


def _kill_mid_load(config: Path, day: date, env: dict[str, str]) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_LOAD, str(config), str(day)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]


def live_season(folder: Path, warehouse_url: str, nights: int = NIGHTS) -> dict:
    """Make the season's CRM in `folder` and live its nights into the warehouse; returns what
    was measured. Runs in its own process too (`python -m tests.season FOLDER URL`)."""
    from flows.backfill import backfill
    from flows.digest import weekly_digest
    from flows.nightly import nightly
    from loudou.config import load_settings
    from loudou.simulator import simulate, write_crm
    from tests.conftest import EXAMPLE, ROOT, write_config

    settings = load_settings(EXAMPLE)
    crm = simulate(
        settings.pipeline(),
        scale=0.03,
        seed=5,
        now=datetime.combine(SEASON_START, time()),
        thresholds=settings.thresholds,
    )
    source = f"sqlite:///{folder / 'crm.sqlite'}"
    write_crm(crm, source)
    life = CrmLife(source, seed=3)
    # relative to loudou.yaml, as a project folder has it: both seasons name the same source
    config = write_config(
        folder,
        "sqlite:///crm.sqlite",
        warehouse_url,
        runner={"workers": 1},
        extract__overlap_minutes=0,
    )
    from prefect.settings import get_current_settings

    # the killed run reports to the same Prefect server as the season
    api = get_current_settings().api.url
    child_env = os.environ | {"PYTHONPATH": str(ROOT)} | ({"PREFECT_API_URL": api} if api else {})
    seconds, digests = [], 0
    for night in range(nights):
        day = SEASON_START + timedelta(days=night)
        life.live_day(day, rep_leaves=night == REP_LEAVES_NIGHT)
        if night == KILLED_NIGHT:
            _kill_mid_load(config, day, child_env)
        started = clock.perf_counter()
        summary = nightly(config=str(config), as_of=day)
        seconds.append(clock.perf_counter() - started)
        assert summary["mode"] == ("full refresh" if night == 0 else "incremental"), day
        if day.weekday() == 0 and night > 0:  # Monday: the week that just ended
            written = weekly_digest(
                config=str(config),
                week_start=day - timedelta(days=7),
                dry_run=True,
                out=str(folder / "digests" / str(day)),
            )
            assert written and all(v.startswith("written") for v in written.values()), written
            digests += len(written)
        if night == BACKFILL_NIGHT:
            week = [day - timedelta(days=i) for i in range(6, -1, -1)]
            built = backfill(config=str(config), start=week[0], end=day)
            assert built == {"built": [], "skipped": [str(d) for d in week]}
            missing = backfill(
                config=str(config),
                start=SEASON_START - timedelta(days=7),
                end=SEASON_START - timedelta(days=1),
            )
            assert len(missing["built"]) == 7 and missing["skipped"] == []
    return {
        "config": str(config),
        "nights": nights,
        "digests": digests,
        "seconds_per_night": round(sum(seconds) / len(seconds), 2),
        "slowest_night_seconds": round(max(seconds), 2),
    }


if __name__ == "__main__":
    measured = live_season(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
    Path(sys.argv[1], "season.json").write_text(json.dumps(measured), encoding="utf-8")
