// HTTP caching of side-effect-free reads served as Connect GET, at the HTTP layer: it sees only
// the request line, a few headers and the bytes of the response, so it does not depend on how
// the request is forwarded.
//
// PUBLIC reads (the same answer for everyone) get an ETag and `Cache-Control: public, max-age`,
// and are kept in a bounded in-memory LRU for the TTL: a repeated GET within it, or one whose
// If-None-Match names the ETag (304), is answered without calling the service. USER and ADMIN
// reads depend on the token: never kept, `private, no-store`, with ETag/304 computed from the
// fresh answer. Errors are never kept and are sent with `no-store`.
import { createHash } from "node:crypto";
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Access, accessOf, type Logger, metrics, REQUEST_ID_HEADER } from "@protomesh/platform";
import { Counter } from "prom-client";

/** How long and how much the gateway keeps (README: caching). */
export interface CacheConfig {
  /** How long a PUBLIC read is kept and may be kept by clients; 0 keeps nothing. */
  ttlMs: number;
  maxEntries: number;
  /** Larger answers are sent with the same headers but not kept. */
  maxBodyBytes: number;
}

/** The settings used when none are configured. */
export const defaultCacheConfig: CacheConfig = { ttlMs: 5_000, maxEntries: 1_000, maxBodyBytes: 128 * 1024 };

const cacheTotal = new Counter({
  name: "protomesh_gateway_cache_total",
  help: "PUBLIC GET reads: hit (answered from the cache), not_modified (304 from the cache), miss (sent to the service).",
  labelNames: ["result"],
  registers: [metrics],
});

type Result = "hit" | "miss" | "not_modified";

interface Read {
  method: DescMethod;
  procedure: string;
  shared: boolean;
}

/** The Connect GET paths of the side-effect-free methods the gateway exposes. */
function readsOf(services: readonly DescService[]): Map<string, Read> {
  const reads = new Map<string, Read>();
  for (const service of services) {
    for (const method of service.methods) {
      const access = accessOf(method);
      if (
        method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ||
        access === Access.INTERNAL
      ) {
        continue;
      }
      const procedure = `${service.typeName}/${method.name}`;
      reads.set(`/${procedure}`, { method, procedure, shared: access === Access.PUBLIC });
    }
  }
  return reads;
}

/** A response as Connect wrote it. */
interface Answer {
  status: number;
  headers: OutgoingHttpHeaders;
  body: Buffer;
}

interface Entry extends Answer {
  etag: string;
  storedAt: number;
}

/** A strong validator: the same bytes of the same type give the same tag, on every replica. */
function etagOf(a: Answer): string {
  const type = String(a.headers["content-type"] ?? "");
  return `"${createHash("sha256").update(type).update("\0").update(a.body).digest("base64url").slice(0, 32)}"`;
}

/** If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ is ignored. */
function matches(ifNoneMatch: string | string[] | undefined, etag: string): boolean {
  if (typeof ifNoneMatch !== "string") return false;
  if (ifNoneMatch.trim() === "*") return true;
  return ifNoneMatch.split(",").some((tag) => tag.trim().replace(/^W\//, "") === etag);
}

/** Header names lower-cased, without what the cache sets or must not replay. */
function replayable(headers: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    const n = name.toLowerCase();
    if (!["content-length", "etag", "cache-control", "age", "vary", "date", "connection"].includes(n)) {
      out[n] = value;
    }
  }
  return out;
}

/**
 * Lets `forward` write its response into a buffer, then hands the whole of it to `finish`, which
 * sends it (the real methods are back in place by then). Connect writes a unary answer with
 * writeHead, write and end, on HTTP/1.1 and HTTP/2 alike.
 */
function intercept(res: ServerResponse, forward: () => void, finish: (a: Answer) => void) {
  let status = 200;
  let headers: OutgoingHttpHeaders = {};
  const chunks: Buffer[] = [];
  const own = res as unknown as Record<string, unknown>;
  const add = (chunk: unknown, encoding: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === "function") return;
    chunks.push(
      typeof chunk === "string"
        ? Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8")
        : Buffer.from(chunk as Uint8Array),
    );
  };
  own.writeHead = (s: number, h?: OutgoingHttpHeaders) => {
    status = s;
    if (h && typeof h === "object") headers = h;
    return res;
  };
  own.write = (chunk: unknown, encoding?: unknown, cb?: unknown) => {
    add(chunk, encoding);
    const done = typeof encoding === "function" ? encoding : cb;
    if (typeof done === "function") process.nextTick(done as () => void);
    return true;
  };
  own.end = (chunk?: unknown, encoding?: unknown, cb?: unknown) => {
    add(chunk, encoding);
    for (const name of ["writeHead", "write", "end"]) delete own[name];
    const done = [chunk, encoding, cb].find((x) => typeof x === "function") as (() => void) | undefined;
    if (done) res.once("finish", done);
    finish({ status, headers, body: Buffer.concat(chunks) });
    return res;
  };
  forward();
}

type Request = IncomingMessage | Http2ServerRequest;

/**
 * The gateway's response cache for GET reads of these services. `admit` says whether a request
 * may be answered from the cache (the per-address rate limit); a refused one is forwarded, and
 * refused there with the usual error.
 */
export function createResponseCache(
  config: CacheConfig,
  services: readonly DescService[],
  opts: { admit(read: DescMethod, req: Request): Promise<boolean>; accessLog?: Logger; now?: () => number },
) {
  const reads = readsOf(services);
  const now = opts.now ?? Date.now;
  const maxAgeS = Math.floor(config.ttlMs / 1000);
  const sharedPolicy = config.ttlMs > 0 ? `public, max-age=${maxAgeS}` : "no-cache";
  // Insertion order is recency: a hit moves its entry to the end, eviction takes the first.
  const entries = new Map<string, Entry>();
  // Misses under way: concurrent requests for the same key wait for the first one's answer.
  const pending = new Map<string, Promise<Entry | undefined>>();

  const fresh = (key: string) => {
    const e = entries.get(key);
    if (!e) return undefined;
    if (now() - e.storedAt >= config.ttlMs) {
      entries.delete(key);
      return undefined;
    }
    entries.delete(key);
    entries.set(key, e);
    return e;
  };

  const store = (key: string, e: Entry) => {
    entries.delete(key);
    entries.set(key, e);
    for (const oldest of entries.keys()) {
      if (entries.size <= config.maxEntries) break;
      entries.delete(oldest);
    }
  };

  /** `Vary` as set so far (CORS sets `origin`) plus what the answer itself varies on. */
  const varyOf = (res: ServerResponse, extra: string) => {
    const had = res.getHeader("vary");
    return [had, extra].filter((v) => v !== undefined && v !== "").join(", ");
  };

  /**
   * Sends an answer with its validator: 304 without a body when the client already has it.
   * `a.headers` are already replayable (filtered once, when the answer came).
   */
  const send = (req: Request, res: ServerResponse, a: Answer, etag: string, policy: string, age?: number) => {
    const headers: OutgoingHttpHeaders = {
      etag,
      "cache-control": policy,
      vary: varyOf(res, "accept-encoding"),
    };
    if (age !== undefined) headers.age = String(age);
    if (matches(req.headers["if-none-match"], etag)) {
      res.writeHead(304, headers).end();
      return true;
    }
    res.writeHead(a.status, { ...a.headers, ...headers, "content-length": a.body.length }).end(a.body);
    return false;
  };

  const logServed = (read: Read, req: Request, result: Result, started: number) =>
    opts.accessLog?.info(
      {
        procedure: read.procedure,
        code: "OK",
        ms: Math.round((performance.now() - started) * 10) / 10,
        requestId: req.headers[REQUEST_ID_HEADER],
        cache: result,
      },
      "request",
    );

  /** Answers from a kept entry; false when the request must go to the service after all. */
  const answerFromCache = async (
    read: Read,
    req: Request,
    res: ServerResponse,
    e: Entry,
    started: number,
  ) => {
    if (!(await opts.admit(read.method, req))) return false;
    const age = Math.floor((now() - e.storedAt) / 1000);
    const result: Result = send(req, res, e, e.etag, sharedPolicy, age) ? "not_modified" : "hit";
    cacheTotal.inc({ result });
    logServed(read, req, result, started);
    return true;
  };

  /** Forwards and sends the answer with its validator; resolves with what it kept, if anything. */
  const forwardAndSend = (
    req: Request,
    res: ServerResponse,
    forward: () => void,
    policy: string,
    key: string | undefined,
  ) =>
    new Promise<Entry | undefined>((resolve) => {
      // A client gone before the answer resolves it too, so waiters forward on their own.
      res.once("close", () => resolve(undefined));
      intercept(res, forward, (a) => {
        if (a.status !== 200) {
          res.setHeader("cache-control", "no-store");
          res.writeHead(a.status, a.headers).end(a.body);
          return resolve(undefined);
        }
        const etag = etagOf(a);
        const kept = { ...a, headers: replayable(a.headers) };
        send(req, res, kept, etag, policy);
        if (key === undefined || a.body.length > config.maxBodyBytes) return resolve(undefined);
        const e = { ...kept, etag, storedAt: now() };
        store(key, e);
        resolve(e);
      });
    });

  const serveShared = async (read: Read, req: Request, res: ServerResponse, forward: () => void) => {
    const started = performance.now();
    // The same URL is the same answer for everyone: the caller's token must not change it.
    delete req.headers.authorization;
    if (config.ttlMs === 0) {
      cacheTotal.inc({ result: "miss" });
      await forwardAndSend(req, res, forward, sharedPolicy, undefined);
      return;
    }
    const accept = String(req.headers["accept-encoding"] ?? "")
      .toLowerCase()
      .replace(/\s+/g, "");
    const key = `${req.url}\n${accept}`;
    // No await unless there is a miss to wait for: the first request must register its own
    // miss before the next one looks.
    const waiting = pending.get(key);
    const kept = fresh(key) ?? (waiting ? await waiting : undefined);
    if (kept && (await answerFromCache(read, req, res, kept, started))) return;
    cacheTotal.inc({ result: "miss" });
    const miss = forwardAndSend(req, res, forward, sharedPolicy, key);
    if (!pending.has(key)) {
      pending.set(key, miss);
      void miss.then(() => pending.delete(key));
    }
    await miss;
  };

  return {
    /** Serves `req`, from the cache where it may, else through `forward` (Connect). */
    handle(req: Request, res: ServerResponse, forward: () => void, log: Logger): void {
      const read = req.method === "GET" ? reads.get((req.url ?? "/").split("?")[0] ?? "") : undefined;
      if (!read) {
        forward();
        return;
      }
      const served = read.shared
        ? serveShared(read, req, res, forward)
        : forwardAndSend(req, res, forward, "private, no-store", undefined);
      void served.catch((err: unknown) => {
        log.error({ err }, "cache failed");
        if (!res.headersSent) res.writeHead(500).end();
      });
    },
    /** How many answers are kept now. */
    size: () => entries.size,
  };
}
