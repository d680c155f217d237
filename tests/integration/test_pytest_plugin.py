"""Keel's pytest plugin as a user's suite sees it: enabled by the ``pytest11``
entry point alone, its fixtures on every backend, its marker and options, and
its manners next to other async plugins. Each test runs an inner pytest
session (``pytester``) on a small test file of a user's."""

from __future__ import annotations

import pytest

from tests import pg

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

WORKFLOWS = """
import keel
import pytest
from datetime import timedelta


@keel.step(name="plug_double")
async def double(x: int) -> int:
    return 2 * x


@keel.workflow(name="plug_flow")
async def flow(x: int) -> int:
    await keel.sleep(timedelta(hours=1))
    return await double.aio(x)
"""


def _run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=WORKFLOWS + body)
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_fixtures_come_from_the_entry_point_with_no_configuration(
    pytester: pytest.Pytester,
) -> None:
    result = _run(
        pytester,
        """
async def test_flow(keel_env, keel_worker, keel_client, keel_store, keel_clock, keel_backend):
    assert keel_backend == "memory" and keel_store.url == "memory://"
    assert keel_worker is keel_env.worker and keel_client is keel_env.client
    assert keel_worker.clock is keel_clock is keel_env.clock
    start = keel_env.now()
    run = await keel_client.start(flow, 21)
    assert await run.result(timeout=10) == 42  # the hour's sleep skipped
    assert (keel_env.now() - start).total_seconds() == 3600


def test_plain_tests_are_untouched():
    assert True
""",
    )
    result.assert_outcomes(passed=2)


def test_the_marker_and_the_option_choose_sqlite(pytester: pytest.Pytester) -> None:
    body = """
async def test_default(keel_env, tmp_path):
    assert str(keel_env.store.url).startswith("sqlite:")
    assert str(tmp_path) in str(keel_env.store.url)
    assert await (await keel_env.client.start(flow, 1)).result(timeout=10) == 2


@pytest.mark.keel(backend="memory")
async def test_marker_wins(keel_env):
    assert keel_env.store.url == "memory://"
"""
    _run(pytester, body, "--keel-backend", "sqlite").assert_outcomes(passed=2)
    marked = body.replace(
        "async def test_default", '@pytest.mark.keel(backend="sqlite")\nasync def test_default'
    )
    _run(pytester, marked).assert_outcomes(passed=2)


def test_worker_options_and_auto_advance_come_from_the_marker(pytester: pytest.Pytester) -> None:
    result = _run(
        pytester,
        """
@pytest.mark.keel(auto_advance=False, lease_ttl=7.0, cache=True)
async def test_marked(keel_env):
    assert keel_env.worker.lease_ttl == 7.0 and keel_env.worker.cache
    run = await keel_env.client.start(flow, 1)
    with pytest.raises(keel.ResultTimeoutError):
        await run.result(timeout=0.2)  # no auto-advance: the hour does not pass
    await keel_env.advance(hours=1)
    assert await run.result(timeout=10) == 2


@pytest.mark.keel(clock=False)
async def test_real_time(keel_env):
    assert keel_env.clock is None
    with pytest.raises(keel.ConfigurationError, match="needs a test clock"):
        await keel_env.sleep(1)
""",
    )
    result.assert_outcomes(passed=2)


def test_fixtures_work_on_postgresql(pytester: pytest.Pytester) -> None:
    pg.require_postgres()
    result = _run(
        pytester,
        """
@pytest.mark.keel(backend="postgres")
async def test_pg(keel_env, keel_clock):
    assert keel_clock is None and keel_env.store.url.startswith("postgresql:")
    assert "/keel_test_" in keel_env.store.url
    run = await keel_env.client.start(double_twice, 5)
    assert await run.result(timeout=30) == 20
    with pytest.raises(keel.ConfigurationError, match="PostgreSQL uses the database server"):
        await keel_env.advance(hours=1)


@keel.workflow(name="plug_double_twice")
async def double_twice(x: int) -> int:
    return await double.aio(await double.aio(x))
""",
        "--keel-postgres-url",
        pg.server_url(),
    )
    result.assert_outcomes(passed=1)


def test_an_unreachable_postgresql_is_a_clear_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = """
@pytest.mark.keel(backend="postgres")
async def test_pg(keel_env):
    pass
"""
    result = _run(pytester, body, "--keel-postgres-url", "postgresql://nobody@127.0.0.1:1/none")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*PostgreSQL at postgresql://nobody@127.0.0.1:1/none is unreachable*"]
    )
    monkeypatch.delenv("KEEL_TEST_POSTGRES_URL", raising=False)
    result = _run(pytester, body)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*backend 'postgres' needs a server: pass --keel-postgres-url*"])


def test_a_sync_test_asking_for_a_worker_is_told_to_be_async(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "\ndef test_sync(keel_env):\n    pass\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*keel_env starts a worker on the test's event loop*async def*"])


OTHER_PLUGIN = """
import asyncio
import inspect
import pytest

ran = []


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    # Stands in for pytest-asyncio/anyio: owns the tests with its marker, on its own loop.
    if pyfuncitem.get_closest_marker("asyncio") is None:
        return None
    kwargs = {n: pyfuncitem.funcargs[n] for n in pyfuncitem._fixtureinfo.argnames}
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(pyfuncitem.obj(**kwargs))
    finally:
        loop.close()
    ran.append(pyfuncitem.name)
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", "asyncio: owned by the other plugin")


def pytest_unconfigure(config):
    print("other plugin ran:", sorted(ran))
"""


def test_tests_of_another_async_plugin_are_left_to_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(OTHER_PLUGIN)
    result = _run(
        pytester,
        """
@pytest.mark.asyncio
async def test_theirs(keel_env):
    # Keel's fixtures start inside the owner's loop.
    assert await (await keel_env.client.start(flow, 2)).result(timeout=10) == 4


async def test_ours(keel_env):
    assert await (await keel_env.client.start(flow, 3)).result(timeout=10) == 6
""",
        "-s",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["other plugin ran: ['test_theirs']"])


def test_listing_the_plugin_in_a_conftest_as_well_does_no_harm(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["keel.testing.pytest_plugin"]\n')
    body = "\nasync def test_it(keel_env):\n    assert keel_env.worker is not None\n"
    _run(pytester, body).assert_outcomes(passed=1)
    _run(pytester, body, "-p", "no:keel").assert_outcomes(passed=1)  # the conftest's alone
