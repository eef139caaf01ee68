#!/usr/bin/python3
"""soak.py — `make soak`: SOAK_SECONDS (default 1800) of mixed, realistic
traffic against the release relay, started here on free loopback ports.

Binaries claim server-ids and answer their phones; phones connect, chat,
idle, ping, say goodbye or drop abruptly, and cycle; binaries leave and
reclaim their id within the grace period, vanish past it, and a rogue
binary now and then tries to take a live id. A dedicated probe pair
measures round trips. Every 10 s the relay's RSS, open fds and live
connection counts are sampled. Every chat message, in both directions,
is numbered per phone session and must arrive exactly once and in order,
unless the phone was closed (then only a clean prefix may arrive).

Pass: RSS at the end within 10 % of RSS after the first sixth of the run
(5 minutes of 30), no sanitizer report, the relay exits 0 on SIGTERM, no
message lost, duplicated or reordered, no unexpected close code, and the
relay's fds back to their idle count once everyone has left. Writes
bench/results/soak-YYYY-MM-DD.md; exits 1 on failure.

Only the Python standard library and python3-websockets (Debian); traffic
only to 127.0.0.1; bounded in time and in connections. It does not read
frames the relay would not forward and does not measure throughput
(that is `make bench`)."""
import argparse
import asyncio
import collections
import datetime
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer")
GRACE = 10.0            # --grace-period; reclaims happen well inside it
ACK_TIMEOUT = 40.0      # > grace + heartbeat: a phone of a vanished binary is closed first
EXPECTED_PHONE_CLOSES = {1000, 4404}  # grace expiry / send in grace; reclaimed id
EXPECTED_ROGUE_CLOSES = {4409}
CHAT_SIDS = 6
PHONES_PER_SID = 5
IDLE_PHONES = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cap_wrap():
    """As root the relay refuses extra capabilities; drop them like an operator."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                if int(line.split()[1], 16) & ~(1 << 10):
                    return ["setpriv", "--bounding-set=-all", "--"]
    return []


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Stats:
    def __init__(self):
        self.errors = []                    # (t, text): lost / duplicated / reordered / unexpected
        self.c = collections.Counter()      # event counters
        self.close_codes = collections.Counter()
        self.window = collections.Counter()  # per-sample counters, reset each sample
        self.rtt_window = []
        self.rtt_all = []
        self.t0 = time.monotonic()

    def now(self):
        return time.monotonic() - self.t0

    def error(self, text):
        if len(self.errors) < 200:
            self.errors.append((round(self.now(), 1), text))
        self.c["errors"] += 1

    def count(self, key, n=1):
        self.c[key] += n
        self.window[key] += n


class Relay:
    def __init__(self, binary, logdir):
        self.port, self.mport = free_port(), free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="soak-relay-", suffix=".log", dir=logdir,
                                               delete=False)
        self.cmd = cap_wrap() + [
            binary, "--insecure-listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.mport}",
            "--rate-limit-burst", "0", "--max-connections", "1000",
            "--grace-period", f"{int(GRACE)}s",
            "--heartbeat-interval", "10s", "--heartbeat-timeout", "10s",
            "--close-timeout", "2s"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited early ({self.proc.returncode}):\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("relay did not start:\n" + self.logs())

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def logs(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return None

    def fd_kinds(self):
        """fd targets by kind (socket, anon_inode:[eventfd], ...) for a leak report."""
        kinds = collections.Counter()
        d = f"/proc/{self.proc.pid}/fd"
        for n in os.listdir(d) if os.path.isdir(d) else []:
            try:
                t = os.readlink(f"{d}/{n}")
            except OSError:
                continue
            kinds[t.split(":[")[0] if t.startswith(("socket:", "pipe:")) else t] += 1
        return kinds

    async def healthz(self):
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 5)
        w.close()
        return json.loads(data.split(b"\r\n\r\n", 1)[1])


def server_headers(sid):
    return {"X-Pyrycode-Server": sid, "X-Pyrycode-Version": "0.1.0", "User-Agent": "pyry-soak/1"}


def client_headers(sid, n):
    return {"X-Pyrycode-Server": sid, "X-Pyrycode-Token": "soak-token-not-secret",
            "User-Agent": "soak-phone/1", "X-Pyrycode-Device-Name": f"soak-{n}"}


def gap_kind(got, want):
    return "duplicated or reordered" if got < want else "lost or reordered"


def abort(ws):
    """Drops the TCP connection without a close frame (a phone losing signal)."""
    ws.transport.abort()


class Binary:
    """One binary session holding a server-id: answers each chat message with
    an ack, pushes its own numbered messages, checks phone sequence numbers.
    One writer task keeps the order of everything it sends."""

    def __init__(self, soak, sid, echo=False):
        self.soak, self.sid, self.echo = soak, sid, echo
        self.conns = {}      # conn_id -> state
        self.out = asyncio.Queue()
        self.ws = None

    async def connect(self):
        self.ws = await websockets.connect(self.soak.relay.url("/v1/server"),
                                           extra_headers=server_headers(self.sid), max_size=None,
                                           close_timeout=2, ping_interval=None)
        self.tasks = [asyncio.create_task(self.reader()), asyncio.create_task(self.writer())]
        if not self.echo:
            self.tasks.append(asyncio.create_task(self.pusher()))

    def send(self, cid, frame):
        self.out.put_nowait(json.dumps({"conn_id": cid, "frame": frame}))

    async def writer(self):
        try:
            while True:
                await self.ws.send(await self.out.get())
        except websockets.exceptions.ConnectionClosed:
            pass

    async def pusher(self):
        while True:
            await asyncio.sleep(random.uniform(0.5, 3.0))
            live = [(cid, st) for cid, st in self.conns.items() if not st["bye"]]
            if not live:
                continue
            cid, st = random.choice(live)
            if not self.soak.fault(0.05):  # --inject-faults: lose a push now and then
                self.send(cid, {"p": st["p"], "push": st["pushes"],
                                "pad": "x" * random.randint(0, 300)})
            st["pushes"] += 1
            self.soak.stats.count("binary_to_phone")

    async def reader(self):
        st_ = self.soak.stats
        try:
            async for raw in self.ws:
                env = json.loads(raw)
                cid = env.get("conn_id")
                if "frame" not in env:          # close notice
                    self.conns.pop(cid, None)
                    st_.count("close_notices")
                    continue
                f = env["frame"]
                if self.echo:
                    self.send(cid, f)
                    continue
                st = self.conns.setdefault(cid, {"p": f.get("p"), "next": 0, "pushes": 0,
                                                 "bye": False})
                if st["p"] != f.get("p"):
                    st_.error(f"{self.sid}: conn {cid} carried phone {f.get('p')} after {st['p']}")
                if "seq" in f:
                    if f["seq"] != st["next"]:
                        st_.error(f"{self.sid}: phone {st['p']} seq {f['seq']} expected "
                                  f"{st['next']} ({gap_kind(f['seq'], st['next'])}, "
                                  "phone->binary)")
                    st["next"] = f["seq"] + 1
                    st_.count("phone_to_binary_ok")
                    self.send(cid, {"p": st["p"], "ack": f["seq"]})
                    if self.soak.fault(0.002):  # --inject-faults: duplicate an ack
                        self.send(cid, {"p": st["p"], "ack": f["seq"]})
                    st_.count("binary_to_phone")
                elif "bye" in f:
                    if f["bye"] != st["next"]:
                        st_.error(f"{self.sid}: phone {st['p']} said bye after {f['bye']} "
                                  f"messages, binary got {st['next']} (phone->binary)")
                    st["bye"] = True
                    self.send(cid, {"p": st["p"], "bye_ack": st["next"], "pushes": st["pushes"]})
        except websockets.exceptions.ConnectionClosed:
            pass

    async def close(self, how):
        if how == "abort":
            abort(self.ws)
        else:
            await self.ws.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Phone:
    """One phone session: chat (numbered), idle, ping; ends in a goodbye
    (all acks and all pushes must have arrived), an abrupt drop, or a close
    by the relay (then a clean prefix is enough)."""

    serial = 0

    def __init__(self, soak, sid):
        Phone.serial += 1
        self.soak, self.sid, self.p = soak, sid, f"{sid}.{Phone.serial}"
        self.sent = 0
        self.acks = 0
        self.pushes = 0
        self.bye = None
        self.changed = asyncio.Event()

    async def connect(self, ping_interval):
        self.ws = await websockets.connect(self.soak.relay.url("/v1/client"),
                                           extra_headers=client_headers(self.sid, Phone.serial),
                                           max_size=None, close_timeout=2,
                                           ping_interval=ping_interval, ping_timeout=30)
        self.reader_task = asyncio.create_task(self.reader())

    async def reader(self):
        st = self.soak.stats
        try:
            async for raw in self.ws:
                f = json.loads(raw)
                if f.get("p") != self.p:
                    st.error(f"phone {self.p} got a frame for {f.get('p')}")
                elif "ack" in f:
                    if f["ack"] != self.acks:
                        st.error(f"phone {self.p} ack {f['ack']} expected {self.acks} "
                                 f"({gap_kind(f['ack'], self.acks)}, binary->phone)")
                    self.acks = f["ack"] + 1
                    st.count("binary_to_phone_ok")
                elif "push" in f:
                    if f["push"] != self.pushes:
                        st.error(f"phone {self.p} push {f['push']} expected {self.pushes} "
                                 f"({gap_kind(f['push'], self.pushes)}, binary->phone)")
                    self.pushes = f["push"] + 1
                    st.count("binary_to_phone_ok")
                elif "bye_ack" in f:
                    self.bye = f
                self.changed.set()
        except websockets.exceptions.ConnectionClosed:
            pass
        self.changed.set()

    async def chat(self, n, size):
        for _ in range(n):
            await self.ws.send(json.dumps({"p": self.p, "seq": self.sent, "text": "y" * size}))
            self.sent += 1
            self.soak.stats.count("phone_to_binary")

    async def wait_for(self, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond() and not self.reader_task.done():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return cond()

    async def goodbye(self):
        """All acks, then bye; the binary's bye_ack states how many it got and
        how many pushes it sent; everything must match exactly."""
        st = self.soak.stats
        if not await self.wait_for(lambda: self.acks == self.sent, ACK_TIMEOUT):
            return self.closed_or_lost(f"acks {self.acks}/{self.sent}")
        try:
            await self.ws.send(json.dumps({"p": self.p, "bye": self.sent}))
        except websockets.exceptions.ConnectionClosed:
            # The send saw the relay's close before the reader task did:
            # let the reader finish so the close is counted, not a loss.
            await asyncio.wait({self.reader_task}, timeout=5)
            return self.closed_or_lost("bye")
        if not await self.wait_for(lambda: self.bye is not None, ACK_TIMEOUT):
            return self.closed_or_lost("bye_ack")
        if not await self.wait_for(lambda: self.pushes >= self.bye["pushes"], 5):
            st.error(f"phone {self.p}: {self.pushes} pushes arrived, binary sent "
                     f"{self.bye['pushes']} (binary->phone lost)")
        if self.bye["bye_ack"] != self.sent:
            st.error(f"phone {self.p}: binary got {self.bye['bye_ack']} of {self.sent} "
                     "(phone->binary lost)")
        await self.ws.close()
        await self.reader_task
        st.count("sessions_goodbye")
        return True

    def closed_or_lost(self, what):
        """The wait ended: fine if the relay closed the phone, else a loss."""
        st = self.soak.stats
        if self.reader_task.done():
            code = self.ws.close_code
            st.close_codes[code] += 1
            st.count("sessions_closed_by_relay")
            if code not in EXPECTED_PHONE_CLOSES:
                st.error(f"phone {self.p}: unexpected close {code} {self.ws.close_reason!r}")
            return False
        st.error(f"phone {self.p}: {what} missing on an open connection")
        abort(self.ws)
        return False

    async def drop(self):
        abort(self.ws)
        self.reader_task.cancel()
        await asyncio.gather(self.reader_task, return_exceptions=True)
        self.soak.stats.count("sessions_dropped")


class Soak:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.binaries = {}        # sid -> live Binary (None while away)
        self.samples = []
        self.connections = 0

    def fault(self, p):
        """True with probability p under --inject-faults (checks the checker)."""
        return self.args.inject_faults and random.random() < p

    def running(self):
        return not self.stop.is_set()

    def budget(self):
        """Bounded in count: refuse new sessions past the cap."""
        self.connections += 1
        return self.connections <= self.args.max_sessions

    async def sleep(self, secs):
        try:
            await asyncio.wait_for(self.stop.wait(), secs)
        except asyncio.TimeoutError:
            pass

    # ---- binaries -------------------------------------------------------------

    async def binary_life(self, sid):
        """Claim, serve for a while, then leave in one of the realistic ways."""
        while self.running() and self.budget():
            b = Binary(self, sid)
            try:
                await b.connect()
            except (OSError, websockets.exceptions.WebSocketException) as e:
                self.stats.error(f"binary {sid}: claim failed: {e!r}")
                await self.sleep(2)
                continue
            self.stats.count("binary_claims")
            self.binaries[sid] = b
            await self.sleep(random.uniform(20, 120))
            how = random.choice(["reclaim", "reclaim_abort", "reclaim_abort", "vanish"])
            if not self.running():
                how = "close"
                await asyncio.sleep(ACK_TIMEOUT / 4)  # the phones' goodbyes first
            self.binaries[sid] = None
            await b.close("abort" if how in ("reclaim_abort", "vanish") else "close")
            self.stats.count(f"binary_{how}")
            if how == "vanish":
                await self.sleep(GRACE + random.uniform(2, 8))   # past grace: phones closed 1000
            elif how != "close":
                await asyncio.sleep(random.uniform(0.2, GRACE / 3))  # within grace: reclaim

    async def rogue(self, sid):
        """A second binary for a live id: the incumbent answers the probe, so 4409."""
        while self.running():
            await self.sleep(random.uniform(30, 90))
            if not self.running() or not self.budget():
                return
            try:
                ws = await websockets.connect(self.relay.url("/v1/server"),
                                              extra_headers=server_headers(sid), close_timeout=2)
                try:
                    await asyncio.wait_for(ws.recv(), 20)
                except websockets.exceptions.ConnectionClosed:
                    pass
                code = ws.close_code
            except websockets.exceptions.InvalidStatusCode as e:
                code = e.status_code
            except asyncio.TimeoutError:
                code = "no close in 20s"
                await ws.close()
            self.stats.count("rogue_claims")
            if code not in EXPECTED_ROGUE_CLOSES:
                self.stats.error(f"rogue binary for live {sid}: got {code}, expected 4409")

    # ---- phones ---------------------------------------------------------------

    async def phone_life(self, sid, slot):
        await self.sleep(random.uniform(0, 5))
        while self.running() and self.budget():
            if self.binaries.get(sid) is None:
                await self.sleep(1)
                continue
            ph = Phone(self, sid)
            try:
                await ph.connect(ping_interval=random.choice([None, 5, 20]))
            except websockets.exceptions.InvalidStatusCode as e:
                self.stats.count(f"phone_rejected_{e.status_code}")
                await self.sleep(1)
                continue
            except (OSError, websockets.exceptions.WebSocketException) as e:
                self.stats.count("phone_connect_failed")
                if not isinstance(e, websockets.exceptions.ConnectionClosed):
                    self.stats.error(f"phone {ph.p}: connect failed: {e!r}")
                await self.sleep(1)
                continue
            self.stats.count("phone_sessions")
            end = time.monotonic() + random.uniform(5, 60)
            try:
                while time.monotonic() < end and self.running() and not ph.reader_task.done():
                    r = random.random()
                    if r < 0.6:
                        await ph.chat(1, random.randint(10, 400))
                    elif r < 0.7:
                        await ph.chat(random.randint(5, 30), random.randint(10, 200))  # burst
                    elif r < 0.75:
                        await ph.chat(1, random.randint(16384, 65536))                 # a file
                    elif r < 0.85:
                        await asyncio.wait_for(await ph.ws.ping(), 30)
                        self.stats.count("phone_pings")
                    else:
                        await self.sleep(random.uniform(2, 8))                        # idle
                    await asyncio.sleep(random.uniform(0.1, 1.5))
            except websockets.exceptions.ConnectionClosed:
                pass
            except asyncio.TimeoutError:
                self.stats.error(f"phone {ph.p}: ping unanswered for 30s")
            if ph.reader_task.done():
                ph.closed_or_lost("close")
            elif self.running() and random.random() < 0.3:
                await ph.drop()
            else:
                await ph.goodbye()
            await asyncio.sleep(random.uniform(0, 3))

    async def idle_phone(self, sid, n):
        """Long-lived phones that only idle and ping (the common case)."""
        while self.binaries.get(sid) is None:
            await asyncio.sleep(0.2)
        while self.running() and self.budget():
            ph = Phone(self, sid)
            try:
                await ph.connect(ping_interval=15)
            except (OSError, websockets.exceptions.WebSocketException):
                await self.sleep(1)
                continue
            self.stats.count("idle_sessions")
            await self.sleep(random.uniform(120, 600))
            await ph.goodbye()

    # ---- probe ----------------------------------------------------------------

    async def probe(self):
        b = Binary(self, "probe", echo=True)
        await b.connect()
        ph = Phone(self, "probe")
        ph.ws = await websockets.connect(self.relay.url("/v1/client"),
                                         extra_headers=client_headers("probe", 0),
                                         close_timeout=2, ping_interval=None)
        seq = 0
        try:
            while self.running():
                t = time.perf_counter()
                await ph.ws.send(json.dumps({"p": "probe", "seq": seq}))
                reply = json.loads(await asyncio.wait_for(ph.ws.recv(), 30))
                rtt = (time.perf_counter() - t) * 1000
                if reply.get("seq") != seq:
                    self.stats.error(f"probe: got {reply.get('seq')} expected {seq}")
                self.stats.rtt_window.append(rtt)
                self.stats.rtt_all.append(rtt)
                self.stats.count("probe_rtts")
                seq += 1
                await asyncio.sleep(0.1)
        except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError) as e:
            self.stats.error(f"probe pair failed: {e!r}")
        await ph.ws.close()
        await b.close("close")

    # ---- sampling -------------------------------------------------------------

    async def sample(self):
        st = self.stats
        try:
            h = await self.relay.healthz()
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            st.error(f"healthz failed: {e!r}")
            h = {}
        rtt = st.rtt_window
        s = {"t": round(st.now()), "rss_kib": self.relay.rss_kib(), "fds": self.relay.fds(),
             "binaries": h.get("connected_binaries"), "phones": h.get("connected_phones"),
             "p2b": st.window["phone_to_binary_ok"], "b2p": st.window["binary_to_phone_ok"],
             "sessions": st.window["phone_sessions"], "p50": pct(rtt, 50), "p99": pct(rtt, 99),
             "errors": st.c["errors"]}
        st.window.clear()
        st.rtt_window = []
        self.samples.append(s)
        if self.args.verbose:
            print("soak: " + " ".join(f"{k}={v}" for k, v in s.items()), flush=True)

    async def sampler(self, deadline):
        while time.monotonic() < deadline:
            await asyncio.sleep(min(10, max(0, deadline - time.monotonic())))
            if not self.relay.alive():
                self.stats.error(f"relay died during the run (exit {self.relay.proc.returncode})")
                return
            await self.sample()

    async def run(self):
        args = self.args
        os.makedirs(args.logdir, exist_ok=True)
        self.relay = Relay(args.relay, args.logdir)
        await self.warm_up()
        self.idle_fds = self.relay.fds()
        self.idle_kinds = self.relay.fd_kinds()
        self.start_rss = self.relay.rss_kib()
        deadline = time.monotonic() + args.seconds
        tasks = [asyncio.create_task(self.probe())]
        sids = [f"chat-{i}" for i in range(CHAT_SIDS)]
        for sid in sids:
            tasks.append(asyncio.create_task(self.binary_life(sid)))
            for slot in range(PHONES_PER_SID):
                tasks.append(asyncio.create_task(self.phone_life(sid, slot)))
        tasks.append(asyncio.create_task(self.stable_binary()))
        tasks.append(asyncio.create_task(self.rogue("stable")))
        for n in range(IDLE_PHONES):
            tasks.append(asyncio.create_task(self.idle_phone("stable", n)))
        await self.sampler(deadline)
        self.stop.set()
        # Everyone says goodbye (or finishes being closed), bounded.
        done, pending = await asyncio.wait(tasks, timeout=ACK_TIMEOUT + 30)
        for t in pending:
            t.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                self.stats.error(f"actor crashed: {t.exception()!r}")
        if pending:
            self.stats.error(f"{len(pending)} actors did not finish within {ACK_TIMEOUT + 30:.0f}s")
        await asyncio.gather(*pending, return_exceptions=True)
        if not self.relay.alive():
            self.quiet, self.quiet_kinds = {}, collections.Counter()
            self.exit_code = f"died during the run ({self.relay.proc.returncode})"
            return
        # Idle again: connection counts to zero and fds back to the idle count.
        settle = time.monotonic() + 20
        while time.monotonic() < settle and self.relay.fds() != self.idle_fds:
            await asyncio.sleep(0.5)
        self.quiet = {"rss_kib": self.relay.rss_kib(), "fds": self.relay.fds()}
        self.quiet_kinds = self.relay.fd_kinds()
        try:
            self.quiet.update(await self.relay.healthz())
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            self.stats.error(f"healthz failed after the run: {e!r}")
        self.relay.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.relay.proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            self.relay.proc.kill()
            self.exit_code = "no exit within 30s of SIGTERM"

    async def warm_up(self):
        """libuv opens one reserve fd (/dev/null, for EMFILE) per loop on its
        first stream; touch every shard (server-ids hash to shards) so the
        idle fd count is the real one."""
        for i in range(16):
            ws = await websockets.connect(self.relay.url("/v1/server"),
                                          extra_headers=server_headers(f"warm-{i}"))
            await ws.close()
        await asyncio.sleep(1)

    async def stable_binary(self):
        b = Binary(self, "stable")
        await b.connect()
        self.binaries["stable"] = b
        self.stats.count("binary_claims")
        await self.stop.wait()
        # Let the idle phones say goodbye before the binary leaves.
        await asyncio.sleep(ACK_TIMEOUT / 4)
        await b.close("close")


def verdict(soak):
    st, samples = soak.stats, soak.samples
    fails = []
    base_t = soak.args.seconds / 6
    base = next((s for s in samples if s["t"] >= base_t), samples[-1] if samples else None)
    end = samples[-1] if samples else None
    growth = None
    if base and end:
        growth = (end["rss_kib"] - base["rss_kib"]) * 100.0 / base["rss_kib"]
        if abs(growth) > 10:
            fails.append(f"RSS {base['rss_kib']} KiB at {base['t']}s -> {end['rss_kib']} KiB at "
                         f"the end ({growth:+.1f} %, limit ±10 %)")
    logs = soak.relay.logs()
    marks = [m for m in SANITIZER_MARKS if m in logs]
    if marks:
        fails.append(f"sanitizer report in the relay log: {marks}")
    if soak.exit_code != 0:
        fails.insert(0, f"relay exit on SIGTERM: {soak.exit_code}")
    if st.c["errors"]:
        fails.append(f"{st.c['errors']} delivery/behaviour errors (first: {st.errors[0][1]})")
    if soak.quiet and soak.quiet.get("fds") != soak.idle_fds:
        diff = dict(soak.quiet_kinds - soak.idle_kinds) or dict(soak.idle_kinds - soak.quiet_kinds)
        fails.append(f"relay fds {soak.quiet.get('fds')} after everyone left, {soak.idle_fds} idle "
                     f"at start (differing: {diff})")
    if soak.quiet.get("connected_binaries") or soak.quiet.get("connected_phones"):
        fails.append(f"healthz after everyone left: {soak.quiet}")
    return fails, base, end, growth


def report(soak, fails, base, end, growth, path):
    st, a = soak.stats, soak.args
    levels = collections.Counter()
    for line in soak.relay.logs().splitlines():
        m = re.search(r'level=(\S+) msg=("[^"]*"|\S+)', line)
        if m:
            levels[f"{m.group(1)} {m.group(2)}"] += 1
    f = lambda v: "—" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
    out = []
    out.append(f"# Soak {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC — "
               f"{'PASS' if not fails else 'FAIL'}\n")
    out.append(f"`make soak` (bench/soak.py), {a.seconds} s of mixed traffic against "
               f"`{os.path.relpath(a.relay, ROOT)}` on 127.0.0.1, relay flags "
               f"`{' '.join(soak.relay.cmd[soak.relay.cmd.index(a.relay) + 1:])}`. Host: "
               f"{os.cpu_count()} CPUs, load average at the end "
               f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.\n")
    out.append(f"Traffic: {CHAT_SIDS} chat server-ids × {PHONES_PER_SID} cycling phones, one "
               f"stable server-id with {IDLE_PHONES} idling phones and a rogue claimant, one "
               "probe pair (a round trip every 100 ms). Binaries leave every 20–120 s: graceful "
               f"close or abrupt drop then reclaim within the {GRACE:.0f} s grace, or vanish past "
               "it. Phone sessions last 5–60 s: chat (10–400 B, bursts of 5–30, 16–64 KiB "
               "files), pings, idling; they end in a goodbye, an abrupt drop or a close by "
               "the relay.\n")
    out.append("## Samples (every 10 s)\n")
    out.append("| t (s) | RSS (MiB) | fds | binaries | phones | phone→binary | binary→phone "
               "| new sessions | probe p50 (ms) | probe p99 (ms) | errors |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in soak.samples:
        out.append(f"| {s['t']} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {f(s['binaries'])} | "
                   f"{f(s['phones'])} | {s['p2b']} | {s['b2p']} | {s['sessions']} | "
                   f"{f(s['p50'])} | {f(s['p99'])} | {s['errors']} |")
    out.append("\n## Summary\n")
    c = st.c
    rows = [
        ("result", "PASS" if not fails else "FAIL: " + "; ".join(fails)),
        ("RSS at start / after first sixth / end",
         f"{soak.start_rss / 1024:.1f} / {base['rss_kib'] / 1024:.1f} (t={base['t']} s) / "
         f"{end['rss_kib'] / 1024:.1f} MiB ({growth:+.1f} %)" if base else "—"),
        ("RSS and fds once everyone left", f"{soak.quiet.get('rss_kib', 0) / 1024:.1f} MiB, "
         f"{soak.quiet.get('fds')} fds (idle at start: {soak.idle_fds})"),
        ("fds peak", str(max((s["fds"] for s in soak.samples), default=0))),
        ("relay exit on SIGTERM", str(soak.exit_code)),
        ("sanitizer reports", "none" if not any(m in soak.relay.logs() for m in SANITIZER_MARKS)
         else "YES"),
        ("chat messages phone→binary: sent / arrived in order / in flight when a phone "
         "or its binary was dropped or closed",
         f"{c['phone_to_binary']} / {c['phone_to_binary_ok']} / "
         f"{c['phone_to_binary'] - c['phone_to_binary_ok']}"),
        ("messages binary→phone (acks and pushes): sent / arrived in order / in flight",
         f"{c['binary_to_phone']} / {c['binary_to_phone_ok']} / "
         f"{c['binary_to_phone'] - c['binary_to_phone_ok']}"),
        ("lost / duplicated / reordered, unexpected closes", str(c["errors"])),
        ("probe round trips, p50 / p99 / max (ms)",
         f"{len(st.rtt_all)}, {f(pct(st.rtt_all, 50))} / {f(pct(st.rtt_all, 99))} / "
         f"{f(max(st.rtt_all, default=None))}"),
        ("phone sessions: goodbye / dropped / closed by relay",
         f"{c['sessions_goodbye']} / {c['sessions_dropped']} / {c['sessions_closed_by_relay']}"),
        ("phone close codes from the relay", ", ".join(f"{k}×{v}" for k, v in
                                                       sorted(st.close_codes.items(),
                                                              key=lambda kv: str(kv[0])) if v)
         or "none"),
        ("phone upgrades refused with an HTTP status", str(sum(v for k, v in c.items()
                                                            if k.startswith("phone_rejected")))),
        ("binary claims / reclaims (close, abort) / vanished past grace",
         f"{c['binary_claims']} / {c['binary_reclaim']}, {c['binary_reclaim_abort']} / "
         f"{c['binary_vanish']}"),
        ("rogue claims of a live id (all 4409)", str(c["rogue_claims"])),
        ("phone pings answered", str(c["phone_pings"])),
        ("close notices to binaries", str(c["close_notices"])),
        ("connection attempts (cap)", f"{soak.connections} ({a.max_sessions})"),
    ]
    out.append("| | |\n|---|---|")
    out += [f"| {k} | {v} |" for k, v in rows]
    out.append("\n## Relay log lines by level and message\n")
    out.append("| line | count |\n|---|---:|")
    out += [f"| {k} | {v} |" for k, v in sorted(levels.items())] or ["| none | 0 |"]
    if st.errors:
        out.append("\n## Errors (first 200)\n")
        out += [f"- {t} s: {e}" for t, e in st.errors]
    out.append("\nPass rule: RSS at the end within ±10 % of RSS after the first sixth of the run "
               "(5 min of 30), no sanitizer report, exit 0 on SIGTERM, no message lost, "
               "duplicated or reordered (a phone's messages must all arrive unless the phone "
               "was closed, then a clean prefix), no unexpected close code, fds and connection "
               "counts back to idle once everyone has left.\n")
    with open(path, "w") as fp:
        fp.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "1800")))
    ap.add_argument("--relay", default=os.environ.get(
        "RELAY_BIN", os.path.join(ROOT, "build", "release", "pyrycode-relay")))
    ap.add_argument("--report", default=None, help="default bench/results/soak-<date>.md")
    ap.add_argument("--logdir", default=os.path.join(ROOT, "build", "soak"))
    ap.add_argument("--max-sessions", type=int, default=100000,
                    help="cap on connections opened by the soak")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--inject-faults", action="store_true",
                    help="make the fake binaries lose and duplicate messages: the run must FAIL")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each sample")
    args = ap.parse_args()
    if args.seconds < 60:
        ap.error("--seconds must be at least 60")
    args.relay = os.path.abspath(args.relay)
    seed = args.seed if args.seed is not None else int(time.time())
    random.seed(seed)
    path = args.report or os.path.join(ROOT, "bench", "results",
                                       f"soak-{datetime.datetime.utcnow():%Y-%m-%d}.md")
    print(f"soak: {args.seconds}s against {args.relay} (seed {seed}); report {path}", flush=True)
    soak = Soak(args)
    try:
        asyncio.run(soak.run())
    finally:
        if getattr(soak, "relay", None) and soak.relay.proc.poll() is None:
            soak.relay.proc.kill()
    fails, base, end, growth = verdict(soak)
    report(soak, fails, base, end, growth, path)
    print(f"soak: {'PASS' if not fails else 'FAIL'}; relay log {soak.relay.log.name}")
    for f in fails:
        print(f"soak: FAIL: {f}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
