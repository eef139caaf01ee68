"""A delivery checker for fault-injection tests (issue #13, cluster.md §4.4,
§10 items 5-9): numbered frames flow both ways between one binary and its
phones (phone -> binary {"n":k}, binary -> phone {"m":k}) while a fault is
injected, and afterwards every flow must satisfy

    each frame is delivered once, in order, or the phone was closed:
    what arrived is exactly 0..j-1 (no duplicate, no reordering, no hole),
    and if j < sent the phone has been closed, never a loss without a close.

Usage (inside one asyncio run):

    chk = Checker(binary_ws)
    flow = await chk.add(phone_ws, "r2", relay=r2)   # attaches it (one frame)
    chk.start()                                      # senders and readers run
    ... inject the fault ...
    await chk.stop(settle=8)                         # stop sending, let it drain
    problems = chk.violations()                      # [] when the invariant holds

Every wait is bounded; nothing here sleeps without a deadline."""
import asyncio
import json
import re
import time

import websockets

ENVELOPE = re.compile(r'\{"conn_id":"([^"]+)","frame":(.*)\}\Z', re.S)


class Flow:
    """One phone of the checked binary: what each side sent and got."""

    def __init__(self, checker, phone, label, cid, relay):
        self.checker = checker
        self.phone = phone
        self.label = label
        self.cid = cid
        self.relay = relay
        self.sent_up = 0          # phone -> binary, numbers 0..sent_up-1 sent
        self.got_up = []          # numbers the binary got, in arrival order
        self.sent_down = 0        # binary -> phone
        self.got_down = []        # numbers the phone got, in arrival order
        self.phone_close = None   # (code, reason) the phone saw, with its time
        self.closed_at = None
        self.notices = []         # close codes the binary got for this phone
        self.first_loss = None    # when the first missing frame would have been due
        self.tasks = []

    @property
    def closed(self):
        return self.phone_close is not None

    def _closed(self, e):
        if self.phone_close is None:
            self.phone_close = (e.code, e.reason)
            self.closed_at = time.monotonic()

    async def send_up(self, interval):
        k = 0
        while not self.checker.stopping.is_set():
            try:
                await self.phone.send('{"n":%d,"p":"%s"}' % (k, self.checker.pad))
            except websockets.exceptions.ConnectionClosed as e:
                self._closed(e)
                return
            k += 1
            self.sent_up = k
            await asyncio.sleep(interval)

    async def read_down(self):
        try:
            while True:
                raw = await self.phone.recv()
                self.got_down.append(json.loads(raw)["m"])
        except websockets.exceptions.ConnectionClosed as e:
            self._closed(e)

    def violations(self):
        out = []
        for what, got, sent in (("phone->binary", self.got_up, self.sent_up),
                                ("binary->phone", self.got_down, self.sent_down)):
            if got != list(range(len(got))):
                bad = [(i, n) for i, n in enumerate(got) if i != n][:8]
                out.append(f"{self.label} {what}: duplicate, hole or reordering "
                           f"(index, number): {bad}; got {len(got)} of {sent}")
            if len(got) > sent:
                out.append(f"{self.label} {what}: got {len(got)} > sent {sent}")
            if len(got) < sent and not self.closed:
                out.append(f"{self.label} {what}: {sent - len(got)} of {sent} frames lost "
                           f"and the phone was never closed (silent loss)")
        return out

    def summary(self):
        return (f"{self.label}: up {len(self.got_up)}/{self.sent_up} "
                f"down {len(self.got_down)}/{self.sent_down} close={self.phone_close} "
                f"notices={self.notices}")


class Checker:
    """Numbered traffic between one binary and its phones. interval: seconds
    between two frames of one sender; pad: bytes of padding per frame."""

    def __init__(self, binary, interval=0.01, pad=0):
        self.binary = binary
        self.interval = interval
        self.pad = "x" * pad
        self.flows = {}            # conn_id -> Flow
        self.binary_close = None
        self.stray = []            # binary frames for an unknown conn_id
        self.stopping = asyncio.Event()
        self.hold = asyncio.Event()   # set: the binary stops reading
        self.down = True              # False: the binary sends nothing
        self._attach = {}          # label -> future of the conn_id
        self._reader = asyncio.ensure_future(self._read_binary())
        self._tasks = []

    async def _read_binary(self):
        try:
            while True:
                while self.hold.is_set():
                    await asyncio.sleep(0.01)
                raw = await self.binary.recv()
                m = ENVELOPE.match(raw)
                if m:
                    cid, inner = m.group(1), json.loads(m.group(2))
                    flow = self.flows.get(cid)
                    if flow is not None and isinstance(inner, dict) and "n" in inner:
                        flow.got_up.append(inner["n"])
                    elif isinstance(inner, dict) and "hello" in inner \
                            and inner["hello"] in self._attach:
                        fut = self._attach.pop(inner["hello"])
                        if not fut.done():
                            fut.set_result(cid)
                    else:
                        self.stray.append(raw[:200])
                    continue
                msg = json.loads(raw)
                flow = self.flows.get(msg.get("conn_id"))
                if flow is not None and "close_code" in msg:
                    flow.notices.append(msg["close_code"])
                else:
                    self.stray.append(raw[:200])
        except websockets.exceptions.ConnectionClosed as e:
            self.binary_close = (e.code, e.reason)

    async def add(self, phone, label, relay=None, timeout=5.0):
        """Proves phone reaches the binary (one hello frame) and registers its
        flow. Raises AssertionError if it does not within timeout."""
        fut = asyncio.get_running_loop().create_future()
        self._attach[label] = fut
        try:
            await phone.send(json.dumps({"hello": label}))
            cid = await asyncio.wait_for(fut, timeout)
        except (asyncio.TimeoutError, websockets.exceptions.ConnectionClosed) as e:
            raise AssertionError(f"phone {label} did not reach the binary ({e!r}); phone "
                                 f"close {phone.close_code} {phone.close_reason!r}, binary "
                                 f"close {self.binary_close}") from None
        flow = Flow(self, phone, label, cid, relay)
        self.flows[cid] = flow
        return flow

    async def _send_down(self):
        while self.down and not self.stopping.is_set():
            for flow in list(self.flows.values()):
                if flow.notices or self.binary_close:
                    continue   # the binary knows the phone is gone
                try:
                    await self.binary.send('{"conn_id":"%s","frame":{"m":%d,"p":"%s"}}'
                                           % (flow.cid, flow.sent_down, self.pad))
                except websockets.exceptions.ConnectionClosed:
                    return
                flow.sent_down += 1
            await asyncio.sleep(self.interval)

    def start(self):
        for flow in self.flows.values():
            flow.tasks = [asyncio.ensure_future(flow.send_up(self.interval)),
                          asyncio.ensure_future(flow.read_down())]
            self._tasks += flow.tasks
        self._tasks.append(asyncio.ensure_future(self._send_down()))

    def _settled(self):
        for f in self.flows.values():
            if f.closed:
                if not f.notices and self.binary_close is None:
                    return False   # the binary's close notice is still due
                continue
            if len(f.got_up) < f.sent_up or len(f.got_down) < f.sent_down:
                return False
        return True

    async def stop(self, settle=8.0):
        """Stops the senders, then waits (at most settle seconds) until every
        frame sent arrived or its phone was closed and the binary told."""
        self.stopping.set()
        deadline = time.monotonic() + settle
        while not self._settled() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self):
        """Cancels the readers (the sockets are the caller's)."""
        self.stopping.set()
        for t in self._tasks + [self._reader]:
            t.cancel()
        await asyncio.gather(*self._tasks, self._reader, return_exceptions=True)

    def violations(self):
        out = []
        for f in self.flows.values():
            out += f.violations()
        return out

    def summary(self):
        return "; ".join(f.summary() for f in self.flows.values()) + \
            f"; binary close={self.binary_close}; stray={self.stray[:3]}"
