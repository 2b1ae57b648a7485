"""`python -m tests.fakes.comfyui --port 8188 [--delay 0.5]`: serve the fake until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from tests.fakes.comfyui.server import FakeComfyUI


async def serve(port: int, delay_s: float) -> None:
    fake = FakeComfyUI(port=port, delay_s=delay_s)
    await fake.start()
    print(f"fake ComfyUI listening on {fake.url} (delay {delay_s}s); Ctrl-C to stop", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each prompt takes")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
