"""The dashboard driven in headless Chromium against a real worker and database."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from tests.browser import apps
from tests.browser.conftest import TOKEN, Dashboard, call

pytestmark = pytest.mark.timeout(180)


def run_url(d: Dashboard, run_id: str) -> str:
    return f"{d.base}/run/{quote(run_id, safe='')}"


def row_ids(page: Page) -> list[str]:
    # A click on a link returns once the navigation commits, maybe before the new
    # page's rows are parsed: an immediate read found none (a loaded machine).
    page.wait_for_load_state("domcontentloaded")
    return page.locator("tbody#rows tr[data-run]").evaluate_all(
        "rows => rows.map(r => r.dataset.run)"
    )


def end_times(page: Page) -> list[str]:
    """The Updated column's ISO times (an ended run's end time), row by row."""
    page.wait_for_load_state("domcontentloaded")
    return page.locator("tbody#rows tr[data-run] td:nth-last-child(2) time").evaluate_all(
        "times => times.map(t => t.getAttribute('datetime'))"
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_runs_list_filters_sorts_and_pages(
    dashboard: Dashboard, page: Page, shots: Path, backend: str
) -> None:
    quick = [dashboard.start(apps.quick, i) for i in range(30)]
    failed = dashboard.start(apps.fails, "bad input")
    for run_id in quick:
        dashboard.wait_state(run_id, "completed")
    dashboard.wait_state(failed, "failed")

    page.goto(f"{dashboard.base}/?workflow=ui.quick&limit=25")
    expect(page.locator("tbody#rows tr[data-run]")).to_have_count(25)
    first = row_ids(page)
    assert first == list(reversed(quick))[:25]  # newest first
    expect(page.locator("a.count.on")).to_contain_text("all 30")
    page.screenshot(path=shots / f"runs-{backend}.png", full_page=True)

    page.click("a[rel=next]")
    expect(page.locator("tbody#rows tr[data-run]")).to_have_count(5)
    assert row_ids(page) == list(reversed(quick))[25:]
    assert "workflow=ui.quick" in page.url and "cursor=" in page.url

    # Oldest first, from the column header; the filters stay in the URL.
    page.goto(f"{dashboard.base}/?workflow=ui.quick&limit=25")
    page.click("a.sort[data-sort=created]")
    assert "order=asc" in page.url and "workflow=ui.quick" in page.url
    assert row_ids(page) == quick[:25]

    # Sort by another column from its header: state (A to Z), then the other
    # way round; by end time (ended runs only), latest end first, paged.
    page.goto(f"{dashboard.base}/?limit=25")
    page.click("a.sort[data-sort=state]")
    assert "sort=state" in page.url and "order=asc" in page.url
    expect(page.locator("th[aria-sort=ascending] a.sort[data-sort=state]")).to_contain_text("▲")
    assert row_ids(page)[:25] == quick[:25]  # completed (oldest first) before failed
    page.click("a.sort[data-sort=state]")
    assert "sort=state" in page.url and "order=asc" not in page.url
    assert row_ids(page)[0] == failed  # failed sorts after completed: first, descending
    page.click("a.sort[data-sort=ended]")
    assert "sort=ended" in page.url
    expect(page.locator(".note")).to_contain_text("only runs that have ended")
    ended, ends = row_ids(page), end_times(page)
    page.click("a[rel=next]")
    ended += row_ids(page)
    ends += end_times(page)
    assert "sort=ended" in page.url and "cursor=" in page.url
    assert sorted(ended) == sorted([*quick, failed])  # every ended run once, across pages
    assert ends == sorted(ends, reverse=True)  # latest end first, across the pages
    page.screenshot(path=shots / f"runs-sorted-{backend}.png", full_page=True)

    # Counts per state filter by state; a reload keeps the filter.
    page.goto(dashboard.base + "/")
    expect(page.locator("a.count[data-state=failed] b")).to_have_text("1")
    expect(page.locator("a.count[data-state=completed] b")).to_have_text("30")
    page.click("a.count[data-state=failed]")
    assert "state=failed" in page.url
    page.reload()
    assert row_ids(page) == [failed]

    # Search by id, and a filter that cannot be read says why.
    page.goto(f"{dashboard.base}/?id={quote(quick[3])}")
    assert row_ids(page) == [quick[3]]
    page.goto(f"{dashboard.base}/?since=yesterday-ish")
    expect(page.locator(".note.bad")).to_contain_text("since")


def test_a_new_run_appears_without_reloading(dashboard: Dashboard, page: Page, shots: Path) -> None:
    page.goto(dashboard.base + "/?workflow=ui.quick")
    expect(page.locator("td.empty")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    run_id = dashboard.start(apps.quick, 7)
    row = page.locator(f"tbody#rows tr[data-run='{run_id}']")
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator(".state")).to_have_text("completed", timeout=15_000)
    expect(page.locator("a.count[data-state=completed] b")).to_have_text("1")
    assert page.evaluate("window.__notReloaded") is True
    page.screenshot(path=shots / "runs-live.png", full_page=True)


def test_cancel_from_the_page(dashboard: Dashboard, page: Page, shots: Path) -> None:
    run_id = dashboard.start(apps.waits)
    dashboard.wait_state(run_id, "suspended")
    dashboard.login(page)
    page.goto(run_url(dashboard, run_id))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel')")
    expect(page.locator(".note.ok")).to_contain_text("cancel requested")
    dashboard.wait_state(run_id, "cancelled")
    page.reload()
    expect(page.locator(".runhead .state").first).to_have_text("cancelled")
    page.screenshot(path=shots / "run-cancelled.png", full_page=True)


def test_signal_from_the_page(dashboard: Dashboard, page: Page) -> None:
    run_id = dashboard.start(apps.waits)
    dashboard.wait_state(run_id, "suspended")
    dashboard.login(page)
    page.goto(run_url(dashboard, run_id))
    page.fill("form.signal input[name=name]", "go")
    page.fill("form.signal textarea[name=payload]", '{"from": "the dashboard"}')
    page.click("button:has-text('Send signal')")
    expect(page.locator(".note.ok")).to_contain_text("signal 'go' sent")
    dashboard.wait_state(run_id, "completed")
    page.reload()
    expect(page.locator(".io")).to_contain_text('"from": "the dashboard"')


def _order(dashboard: Dashboard) -> str:
    run_id = dashboard.start(apps.order, 42, 2)
    dashboard.wait_state(run_id, "suspended")  # waiting for the approval signal
    deadline = time.monotonic() + 30
    while True:  # the signal wait is journaled once the child has finished
        try:
            dashboard.signal(run_id, "approve", {"by": "ann"})
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    dashboard.wait_state(run_id, "completed")
    return run_id


def test_timeline_shows_attempts_retries_and_the_child(
    dashboard: Dashboard, page: Page, shots: Path
) -> None:
    run_id = _order(dashboard)
    page.goto(run_url(dashboard, run_id))
    charge = page.locator("tr.lane[data-command='step:ui.charge#0']")
    expect(charge.locator(".bar.b-attempt-failed")).to_have_count(2)
    expect(charge.locator(".bar.b-attempt-ok")).to_have_count(1)
    expect(charge.locator(".bar.b-retry-wait")).to_have_count(2)
    expect(charge).to_contain_text("3 attempts")
    expect(charge.locator(".input")).to_have_text('{"amount": 42, "fail_times": 2}')
    titles = charge.locator(".bar.b-attempt-failed").evaluate_all("bs => bs.map(b => b.title)")
    assert all(re.search(r"attempt \d failed on \S+ in ", t) for t in titles), titles
    expect(page.locator("tr.lane[data-command='sleep:sleep#0'] .bar.b-timer")).to_have_count(1)
    expect(page.locator("tr.lane[data-command='signal:approve#0'] .bar.b-signal")).to_have_count(1)
    child = page.locator("tr.lane[data-command='child:ui.ship#0'] a.child")
    expect(child).to_be_visible()
    page.screenshot(path=shots / "run.png", full_page=True)

    page.click("#failed-only")
    expect(page.locator("tr.lane")).to_have_count(1)
    expect(page.locator("tr.lane")).to_have_attribute("data-command", "step:ui.charge#0")

    page.go_back()
    page.locator("tr.lane[data-command='child:ui.ship#0'] a.child").click()
    expect(page.locator("h1")).to_contain_text("child:ui.ship#0")
    expect(page.locator(".facts")).to_contain_text(run_id)  # the parent, linked


def test_a_graph_runs_nodes_and_their_drawing(
    dashboard: Dashboard, page: Page, shots: Path
) -> None:
    run_id = dashboard.start(apps.approvals, amount=42)
    dashboard.wait_state(run_id, "suspended")  # at its approval
    page.goto(run_url(dashboard, run_id))
    nodes = page.locator("section.graph table.nodes")
    expect(nodes.locator("tr[data-node='price']")).to_contain_text("completed")
    expect(nodes.locator("tr[data-node='price']")).to_contain_text("84")
    expect(nodes.locator("tr[data-node='sign_off']")).to_contain_text("waiting_for_approval")
    expect(nodes.locator("tr[data-node='book']")).to_contain_text("pending")
    page.screenshot(path=shots / "graph-run.png", full_page=True)

    async def approve() -> None:
        async with dashboard.client() as c:
            await c.approve(run_id, "sign_off", actor="ann")

    call(approve)
    dashboard.wait_state(run_id, "completed")
    page.reload()
    expect(nodes.locator("tr[data-node='sign_off']")).to_contain_text("completed (approved)")
    expect(nodes.locator("tr[data-node='book']")).to_contain_text("booked 84")
    page.click("section.graph summary:has-text('Mermaid')")
    drawing = page.locator("section.graph pre.mermaid-text")
    expect(drawing).to_be_visible()
    expect(drawing).to_contain_text('[/"sign_off (approval): completed (approved)"/]')


def test_the_journal_downloads_in_the_export_format(dashboard: Dashboard, page: Page) -> None:
    run_id = dashboard.start(apps.quick, 4)
    dashboard.wait_state(run_id, "completed")
    page.goto(run_url(dashboard, run_id))
    with page.expect_download() as info:
        page.click("a:has-text('download')")
    download = info.value
    assert download.suggested_filename == f"{run_id}.json"
    text = Path(download.path()).read_text()

    from keel.core.journal import journal_text
    from tests.browser.conftest import call

    async def exported() -> str:
        async with dashboard.client() as c:
            return journal_text(await c.store.reads.history(run_id))

    assert text == call(exported)
    from keel.replay import check_files

    target = Path(download.path()).with_name(f"{run_id}.json")
    target.write_text(text)
    assert check_files([target]).passed()


def test_time_travel_shows_the_run_at_each_event(
    dashboard: Dashboard, page: Page, shots: Path
) -> None:
    run_id = _order(dashboard)
    page.goto(run_url(dashboard, run_id))
    at = page.locator("#state-at .at")
    expect(at).to_have_attribute("data-seq", re.compile(r"^\d+$"))
    last = int(at.get_attribute("data-seq") or 0)
    expect(at).to_contain_text("nothing pending")

    def travel(seq: int) -> None:
        page.locator("#travel").fill(str(seq))
        expect(at).to_have_attribute("data-seq", str(seq))

    travel(1)  # the first attempt failed: a retry is pending
    expect(at).to_contain_text("step_attempt_failed")
    expect(at.locator("table.commands")).to_contain_text('{"amount": 42, "fail_times": 2}')
    expect(at.locator("ul.pending")).to_contain_text("step:ui.charge#0")
    expect(at.locator("ul.pending")).to_contain_text("retrying")
    travel(4)  # the timer started
    expect(at.locator("ul.pending")).to_contain_text("sleep:sleep#0")
    expect(at.locator("table.commands")).to_contain_text('{"charged": 42}')
    page.screenshot(path=shots / "time-travel.png", full_page=True)
    travel(last)
    expect(at.locator("ul.signals")).to_contain_text("approve")
    expect(at).to_contain_text("nothing pending")


def test_the_token_refuses_actions(dashboard: Dashboard, page: Page, shots: Path) -> None:
    run_id = dashboard.start(apps.waits)
    dashboard.wait_state(run_id, "suspended")
    page.goto(run_url(dashboard, run_id))
    expect(page.locator("section.actions")).to_have_count(0)  # not logged in: no buttons
    cancel = f"{dashboard.base}/run-action/cancel/{quote(run_id, safe='')}"
    assert page.request.post(cancel, form={"csrf": "x"}).status == 403

    page.goto(dashboard.base + "/login")
    page.fill("input[name=token]", "not-the-token")
    page.click("button:has-text('Log in')")
    expect(page.locator(".note.bad")).to_contain_text("not the operator token")
    page.screenshot(path=shots / "login-refused.png", full_page=True)

    dashboard.login(page)
    # Logged in, but a form without the CSRF value (another site's) is refused.
    assert page.request.post(cancel, form={"csrf": "forged"}).status == 403
    assert page.request.post(cancel).status == 403
    # A script with the token in a header needs no cookie and no CSRF value.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    other = page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        assert other.request.post(cancel, headers={"Authorization": "Bearer nope"}).status == 403
        response = other.request.post(cancel, headers=bearer, max_redirects=0)
        assert response.status == 303
    finally:
        other.close()
    dashboard.wait_state(run_id, "cancelled")
    assert TOKEN not in page.content()


def test_a_dashboard_without_a_token_is_read_only(
    readonly: Dashboard, page: Page, shots: Path
) -> None:
    run_id = readonly.start(apps.waits)
    readonly.wait_state(run_id, "suspended")
    page.goto(run_url(readonly, run_id))
    expect(page.locator("section.actions")).to_have_count(0)
    cancel = f"{readonly.base}/run-action/cancel/{quote(run_id, safe='')}"
    response = page.request.post(cancel, headers={"Authorization": "Bearer anything"})
    assert response.status == 403
    assert "read-only" in response.text()
    readonly.wait_state(run_id, "suspended")


def test_queues_schedules_and_workers_pages(dashboard: Dashboard, page: Page, shots: Path) -> None:
    from tests.browser.conftest import call

    async def setup() -> None:
        async with dashboard.client() as c:
            await c.set_queue_limit("emails", 3)
            await c.schedule(apps.quick, 5, cron="*/5 * * * *", schedule_id="every-5-min")

    call(setup)
    run_id = dashboard.start(apps.waits)
    dashboard.wait_state(run_id, "suspended")
    dashboard.login(page)

    page.goto(dashboard.base + "/queues")
    queue = page.locator("tr[data-queue=emails]")
    expect(queue.locator("td").nth(3)).to_have_text("3")
    queue.locator("button:has-text('Pause')").click()
    expect(page.locator(".note.ok")).to_contain_text("queue emails")
    expect(queue.locator("td").nth(3)).to_have_text("paused")
    page.screenshot(path=shots / "queues.png", full_page=True)
    queue.locator("input[name=limit]").fill("2")
    queue.locator("button:has-text('Resume')").click()
    expect(queue.locator("td").nth(3)).to_have_text("2")

    page.goto(dashboard.base + "/schedules")
    row = page.locator("tr[data-schedule=every-5-min]")
    expect(row).to_contain_text("active")
    row.locator("button:has-text('Pause')").click()
    expect(page.locator("tr[data-schedule=every-5-min]")).to_contain_text("paused")
    page.locator("tr[data-schedule=every-5-min] button:has-text('Resume')").click()
    expect(page.locator("tr[data-schedule=every-5-min]")).to_contain_text("active")
    page.screenshot(path=shots / "schedules.png", full_page=True)

    page.goto(dashboard.base + "/workers")
    expect(page.locator("tr[data-worker]")).to_have_count(1)
    expect(page.locator("tr[data-worker]")).to_contain_text("ui.order@")
    page.screenshot(path=shots / "workers.png", full_page=True)


def test_retry_a_failed_run_from_the_page(dashboard: Dashboard, page: Page, shots: Path) -> None:
    run_id = dashboard.start(apps.fails, "still broken")
    dashboard.wait_state(run_id, "failed")
    dashboard.login(page)
    page.goto(run_url(dashboard, run_id))
    page.click("button:has-text('Retry')")
    expect(page.locator(".note.ok")).to_contain_text(f"retry of {run_id}")
    new_id = page.locator(".runhead h1 .mono").inner_text()
    assert new_id != run_id
    expect(page.locator(".facts")).to_contain_text(run_id)  # "copied from" the original
    dashboard.wait_state(new_id, "failed")  # the bug is still there: it fails again
    page.goto(run_url(dashboard, run_id))
    expect(page.locator(".facts")).to_contain_text(new_id)  # the original links to it
    page.screenshot(path=shots / "run-retried.png", full_page=True)


def test_terminate_and_resume_from_the_page(dashboard: Dashboard, page: Page) -> None:
    run_id = dashboard.start(apps.waits)
    dashboard.wait_state(run_id, "suspended")
    dashboard.login(page)
    page.goto(run_url(dashboard, run_id))
    page.click("button:has-text('Resume')")
    expect(page.locator(".note.ok")).to_contain_text("resumed")
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("input[name=reason]", "stuck in a test")
    page.click("button:has-text('Terminate')")
    expect(page.locator(".note.ok")).to_contain_text("terminated")
    dashboard.wait_state(run_id, "terminated")
    page.reload()
    expect(page.locator(".at")).to_contain_text("terminated")


def test_bulk_actions_on_selected_runs_and_on_a_filter(dashboard: Dashboard, page: Page) -> None:
    waiting = [dashboard.start(apps.waits) for _ in range(4)]
    for run_id in waiting:
        dashboard.wait_state(run_id, "suspended")
    dashboard.login(page)
    page.goto(dashboard.base + "/?workflow=ui.waits")
    for run_id in waiting[:2]:
        page.check(f"tr[data-run='{run_id}'] input[name=run_id]")
    page.select_option("#bulk-selected select[name=action]", "terminate")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-selected button:has-text('Apply to selected')")
    expect(page.locator(".note.ok")).to_contain_text("terminate: 2 runs")
    for run_id in waiting[:2]:
        dashboard.wait_state(run_id, "terminated")
    # Every run matching a filter: the count is shown before anything is done.
    page.click("a:has-text('cancel all matching')")
    expect(page.locator("h1")).to_contain_text("Cancel 4 runs?")
    page.click("#confirm-bulk")
    expect(page.locator(".note.ok")).to_contain_text("cancel: 2 runs, 2 refused")
    for run_id in waiting[2:]:
        dashboard.wait_state(run_id, "cancelled")
