// HTTP/2 sessions to one upstream service, for forwarding gRPC frames as bytes. A few sessions
// rather than one: node drives each session from one socket, and a second spreads the flow
// control windows and the kernel's buffers; more buys nothing on a loopback or a LAN.
import { lookup } from "node:dns/promises";
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  type OutgoingHttpHeaders,
} from "node:http2";
import { isIP } from "node:net";

/** Sessions kept per upstream (at least one per address of a `dns:///` target). */
const SESSIONS = 2;
// A name's addresses are looked up again when a session is (re)opened, at most this often.
const RESOLVE_MS = 5_000;
// Per-stream receive window: a whole large answer arrives without waiting for WINDOW_UPDATEs.
const STREAM_WINDOW = 1024 * 1024;

/** Forwards requests to one upstream over a small pool of HTTP/2 sessions. */
export interface Upstream {
  /** Opens a stream to the upstream; errors arrive as the stream's 'error' event. */
  request(headers: OutgoingHttpHeaders): ClientHttp2Stream;
  close(): void;
}

/** Splits `host:port` or `[::1]:port` into host and port. */
function hostPort(address: string, target: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
  if (!m) throw new Error(`upstream target "${target}" is not host:port`);
  return { host: m[1] ?? m[2] ?? "", port: Number(m[3]) };
}

/**
 * The addresses of a grpc target: `dns:///host:port` or `host:port` names one host (looked up
 * for all its addresses); `ipv4:a:port,b:port` and `ipv6:[a]:port,…` list fixed addresses, as
 * grpc-js reads them.
 */
function parseTarget(target: string): { host: string; port: number }[] {
  const fixed = /^ipv[46]:(.*)$/.exec(target)?.[1];
  if (fixed !== undefined) return fixed.split(",").map((a) => hostPort(a.trim(), target));
  return [hostPort(target.replace(/^dns:(\/\/[^/]*)?\//, ""), target)];
}

/**
 * A pool of HTTP/2 sessions to `target`, balanced round-robin over every address it lists or
 * its name resolves to. A session that fails, closes or is sent GOAWAY is replaced on the next
 * request; streams already open on it finish there.
 */
export function createUpstream(target: string): Upstream {
  const listed = parseTarget(target);
  const named = listed.length === 1 && !isIP(listed[0]?.host ?? "") ? listed[0] : undefined;
  const authority = (a: { host: string; port: number }) =>
    isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
  let addresses: string[] = named ? [] : listed.map(authority);
  let resolvedAt = 0;
  let resolving: Promise<void> | undefined;
  const resolve = () => {
    if (!named || resolving || Date.now() - resolvedAt < RESOLVE_MS) return;
    resolving = lookup(named.host, { all: true })
      .then(
        (found) => {
          if (found.length > 0)
            addresses = found.map((a) => authority({ host: a.address, port: named.port }));
        },
        () => {},
      )
      .finally(() => {
        resolvedAt = Date.now();
        resolving = undefined;
      });
  };
  const slots: (ClientHttp2Session | undefined)[] = [];
  let next = 0;
  let closed = false;

  const open = (slot: number): ClientHttp2Session => {
    resolve();
    // Until the first lookup answers, the name itself (node resolves it for the socket).
    const address = addresses[slot % addresses.length] ?? authority(named ?? { host: "", port: 0 });
    const session = connect(`http://${address}`, {
      maxSessionMemory: 64,
      settings: { initialWindowSize: STREAM_WINDOW, enablePush: false },
    });
    const drop = () => {
      if (slots[slot] === session) slots[slot] = undefined;
    };
    // A failed session fails its streams; the next request opens another.
    session.on("error", drop);
    session.on("goaway", drop);
    session.on("close", drop);
    session.on("connect", () => session.setLocalWindowSize(STREAM_WINDOW * 8));
    slots[slot] = session;
    return session;
  };

  return {
    request(headers) {
      const size = Math.max(SESSIONS, addresses.length);
      const slot = next++ % size;
      const current = slots[slot];
      const session = current && !current.closed && !current.destroyed ? current : open(slot);
      return session.request(headers, { endStream: false });
    },
    close() {
      if (closed) return;
      closed = true;
      for (const s of slots) s?.close();
    },
  };
}
