"""A faithful ComfyUI 0.3.64 fake for tests: HTTP routes, WebSocket events, validation, real Pillow work.

Run by hand with `python -m tests.fakes.comfyui --port 8188 [--delay 0.5]`.
"""

from tests.fakes.comfyui.server import FakeComfyUI

__all__ = ["FakeComfyUI"]
