"""The confirmation mailer ends when the app stops, whatever it was doing."""

import asyncio
from types import SimpleNamespace

from listkit.web.pages import ConfirmationMailer


class _DB:
    async def write(self, fn, *args):
        await asyncio.sleep(0)
        return [], False  # no confirmation due


def test_stopping_the_confirmation_mailer_right_after_a_signup_woke_it_always_ends():
    # asyncio.wait_for (Python 3.11) loses a cancellation that arrives just as the
    # awaited event is set: the mailer then never ended and the app's shutdown hung.
    async def main() -> list[bool]:
        ended = []
        for spins in range(40):
            mailer = ConfirmationMailer(SimpleNamespace(state=SimpleNamespace(db=_DB())))
            mailer.poke()
            for _ in range(spins % 5):
                await asyncio.sleep(0)
            mailer.poke()  # a signup arrives as the app stops
            stopping = asyncio.ensure_future(mailer.stop())
            await asyncio.wait({stopping}, timeout=2)
            ended.append(stopping.done() and mailer.task.done())
        return ended

    # Not asyncio.run: its clean-up would wait for a mailer that never ends.
    loop = asyncio.new_event_loop()
    try:
        ended = loop.run_until_complete(main())
    finally:
        loop.close()
    assert all(ended), f"{ended.count(False)} of 40 stops never ended"
