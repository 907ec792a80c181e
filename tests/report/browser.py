"""A real headless browser for the report's tests: Debian's chromium, driven over the DevTools
protocol through ``--remote-debugging-pipe`` (JSON messages ending in NUL on file descriptors 3
and 4), so no driver package is needed.

:func:`load_page` opens a file, waits for its load event, and returns what the page logged as
errors and what each ``<img>`` rendered to."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: What each image rendered to: whether it loaded, its natural and laid-out size, and how many
#: distinct colours its pixels have (drawn onto a canvas: 1 means blank).
IMAGES_JS = """
JSON.stringify([...document.images].map(img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  let colours = 0;
  if (img.complete && img.naturalWidth > 0) {
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data, seen = new Set();
    for (let i = 0; i < d.length && seen.size < 50; i += 4 * 97) seen.add(d[i] << 16 | d[i+1] << 8 | d[i+2]);
    colours = seen.size;
  }
  const r = img.getBoundingClientRect();
  return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
          naturalHeight: img.naturalHeight, shownWidth: r.width, shownHeight: r.height, colours};
}))
"""


def chromium() -> str | None:
    """The chromium executable, or None where the machine has none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    errors: list[str]  # console errors, uncaught exceptions, failed loads
    images: list[dict]  # IMAGES_JS's description of each <img>
    title: str


class _Pipe:
    def __init__(self, exe: str, profile: str):
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()

        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "--allow-file-access-from-files"]

        def fds() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)  # out of the way of 3 and 4 first
            os.dup2(r, 3)
            os.dup2(w, 4)

        # close_fds would close 3 and 4 again after preexec_fn: the parent's other descriptors
        # are close-on-exec anyway (PEP 446)
        self.proc = subprocess.Popen([exe, *flags], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        want = self._id
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._next(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def load_page(path: Path, width: int = 1280, height: int = 900) -> Page:
    """Open ``path`` in headless chromium and describe what it rendered (module docstring)."""
    exe = chromium()
    assert exe is not None, "no chromium on this machine"
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(exe, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            nav = pipe.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
            errors = [f"navigation failed: {nav['errorText']}"] if nav.get("errorText") else []
            pipe.wait_event("Page.loadEventFired", timeout=60)
            result = pipe.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True},
                               session=session)["result"]
            title = pipe.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                              session=session)["result"].get("value", "")
            for m in pipe.events:
                method, p = m.get("method"), m.get("params", {})
                if method == "Runtime.exceptionThrown":
                    d = p["exceptionDetails"]
                    errors.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
                elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
                elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                    errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            return Page(errors, json.loads(result["value"]), title)
        finally:
            pipe.close()
