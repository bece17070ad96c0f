import pytest

import aplex
from tests import works


def test_submit_plain_and_coroutine():
    with aplex.ThreadAsyncPoolExecutor(pool_size=2) as executor:
        assert executor.submit(works.add, 1, y=2).result(timeout=10) == 3
        assert executor.submit(works.async_add, 1, y=2).result(timeout=10) == 3


@pytest.mark.anyio
async def test_run_from_any_loop():
    async with aplex.ThreadAsyncPoolExecutor(pool_size=2) as executor:
        assert await executor.run(works.async_add, 2, 3) == 5


@pytest.mark.trio
async def test_trio_marker_runs_under_trio():
    import sniffio

    assert sniffio.current_async_library() == "trio"
    async with aplex.ThreadAsyncPoolExecutor(pool_size=1) as executor:
        assert await executor.run(works.add, 2, 3) == 5
