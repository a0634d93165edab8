"""The delivery part of the bench (bench/delivery.py) keeps working: end to end at a tiny scale
(20 orders per run) against a real gateway, a real worker process, a real SMTP sink and
PostgreSQL, no wrk; its exactly-once check catches a second copy and a missing mail; a
`--only delivery` run replaces only its own section of RESULTS.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.delivery import BEGIN, END, DeliveryReport, DeliveryRun, Order, section, splice
from bench.flowgen import Stats

ROOT = Path(__file__).resolve().parent.parent


def test_delivery_part_end_to_end_small(tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    cmd = [sys.executable, "-m", "bench", "--only", "delivery", "--delivery-orders", "20", "--delivery-rate", "50",
           "--delivery-load-users", "10", "--delivery-timeout", "30", "--no-write",
           "--plots-dir", str(charts)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SMTP_URL")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    assert "INVARIANT" not in out and "TIMED OUT" not in out
    # Both runs: 20 orders completed, every one's confirmation accepted by the sink, once, to the buyer.
    for run in ("quiet", "onsale"):
        row = rf"^\| {run} \| 20 \| [\d,]+ \| [\d.,]+ \| [\d.,]+ \| [\d.,]+ \| [\d.,]+ \| [\d.,]+ \|"
        assert re.search(row, out, re.M), out
        mails = (rf"\*\*{run}\*\*: 20 of 20 orders completed.*Mails: 20 orders' confirmations accepted, 20 messages, "
                 r"0 orders with more than one copy, 0 missing, 0 to another address")  # fmt: skip
        assert re.search(mails, out), out
        assert re.search(rf"\*\*{run}\*\*: .*`order_emails.sent_at` set for 20; mail jobs by status: succeeded: 20",
                         out), out  # fmt: skip
    # The onsale load ran and was answered.
    assert re.search(r"The load: [\d,]+ reserves in [\d.]+ s = [\d,]+ req/s, .*answers 201: [\d,]+", out), out
    assert "over both runs (after a 2 s grace): **met** (40 orders); 0 accepted messages named no order" in out
    assert "with exit status 0" in out
    assert {p.name for p in charts.iterdir()} == {"delivery-queue.png"}


def _run(orders: list[Order], mails: list[dict[str, object]]) -> DeliveryRun:
    return DeliveryRun("onsale", None, 100.0, orders, mails, [], Stats())


def test_exactly_once_check_catches_a_second_copy_and_a_missing_mail() -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(3)]
    orders = [Order(n + 1, oid, 10.0 + n, 10.1 + n, 1, 201) for n, oid in enumerate(ids)]

    def mail(n: int, t: float, to: str | None = None) -> dict[str, object]:
        return {"t": t, "message_id": f"<order-{ids[n]}@booking>", "to": [to or f"bench{n + 1}@example.com"]}

    clean = _run(orders, [mail(0, 10.3), mail(1, 11.6), mail(2, 12.2)])
    f = clean.figures()
    assert (f["delivered"], f["duplicates"], f["missing"], f["wrong_recipient"]) == (3, 0, 0, 0)
    assert round(f["span"], 6) == 2.1 and round(f["tail"], 6) == 0.1  # 10.1 -> 12.2; 12.1 -> 12.2
    assert [round(x, 6) for x in clean.latencies()] == [0.1, 0.2, 0.5]
    text = "\n".join(section(DeliveryReport([clean], 0, None, 3, 100.0, 0), "python -m bench --only delivery", "now"))
    assert "accepted exactly once, to its buyer: **met** (3 orders)" in text
    assert "completion -> accepted p99 0.50 s, max 0.50 s, 0 missing: **met**" in text
    # A second copy of order 0 (later), order 2 never accepted, order 1 sent to someone else.
    bad = _run(orders, [mail(0, 10.3), mail(0, 14.0), mail(1, 11.6, "someone@example.com")])
    f = bad.figures()
    assert (f["delivered"], f["duplicates"], f["missing"], f["wrong_recipient"], f["copies"]) == (2, 1, 1, 1, 3)
    assert [round(x, 6) for x in bad.latencies()] == [0.2, 0.5]  # the first copy counts
    text = "\n".join(section(DeliveryReport([bad], 1, None, 3, 100.0, 0), "cmd", "now"))
    assert "accepted exactly once, to its buyer: **not met** (3 orders)" in text
    assert "1 accepted messages named no order" in text
    assert "completion -> accepted p99 0.50 s, max 0.50 s, 1 missing: **not met**" in text
    # A message that names no order of the runs alone fails the check too.
    text = "\n".join(section(DeliveryReport([clean], 1, None, 3, 100.0, 0), "cmd", "now"))
    assert "accepted exactly once, to its buyer: **not met** (3 orders)" in text


def test_only_delivery_replaces_its_own_section() -> None:
    old = f"# Bench results\n\n## pgbench\n| a |\n\n{BEGIN}\nold delivery\n{END}\n\n## after\n"
    merged = splice(old, f"{BEGIN}\nnew delivery\n{END}\n")
    assert merged == f"# Bench results\n\n## pgbench\n| a |\n\n{BEGIN}\nnew delivery\n{END}\n\n## after\n"
    appended = splice("# Bench results\n\n## pgbench\n", f"{BEGIN}\nfirst\n{END}\n")
    assert appended == f"# Bench results\n\n## pgbench\n\n{BEGIN}\nfirst\n{END}\n"
