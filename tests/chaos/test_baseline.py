"""No fault: the yardstick every other scenario's ledger is read against."""

import pytest

pytestmark = pytest.mark.timeout(120)


async def test_no_fault_every_photo_once(chaos, ledger):
    async with chaos() as stack:
        await stack.start_default(workers=1)
        subs = await stack.send_telegram_photos(5)
        assert await stack.wait_answered(subs, timeout=90), stack.logs()
        await stack.settle()
        await stack.fill_ledger()
    assert (ledger.lost, ledger.duplicates, ledger.dead, ledger.reruns) == (0, 0, 0, 0), ledger
    assert ledger.delivered == 5, ledger
