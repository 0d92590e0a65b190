import { setTimeout as delay } from "node:timers/promises";
import {
  createLocalJWKSet,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from "jose";
import { Code, ConnectError } from "./errors.ts";

/** A signed-in user, as proven by a verified access token. */
export interface UserIdentity {
  userId: string;
  sessionId: string;
  roles: string[];
  tokenId: string;
  /** The account's email address as auth knew it when the token was issued. */
  email: string;
  /** True only when auth vouched for the email address (`email_verified` claim exactly true). */
  emailVerified: boolean;
  issuedAt: Date;
  expiresAt: Date;
}

/** Verifies access tokens; rejects anything not valid with UNAUTHENTICATED. */
export interface AccessTokenVerifier {
  verify(token: string): Promise<UserIdentity>;
  /** True once it holds a key set. */
  hasKeys(): boolean;
  /**
   * Fetches the key set until it holds one, retrying with backoff (auth may start after this
   * process), unless `signal` aborts first. Called at start: otherwise the first storm of calls
   * (every client reconnecting to a new replica) waits on one fetch, and all of it fails if that
   * fetch does.
   */
  loadKeys(signal?: AbortSignal): Promise<void>;
}

/** Access tokens are JWTs of this type (RFC 9068), which keeps other JWTs from passing as one. */
export const ACCESS_TOKEN_TYPE = "at+jwt";
/** The only algorithm access tokens may use; pinned so that `none` or HS256 can never verify. */
export const ACCESS_TOKEN_ALG = "EdDSA";

/** The longest an access token may live (auth caps ACCESS_TOKEN_TTL_S at this). */
export const MAX_ACCESS_TOKEN_TTL_MS = 3_600_000;
/** How far another host's clock may run ahead of ours before its `iat` counts as the future. */
const CLOCK_SKEW_S = 30;

const JWKS_MAX_AGE_MS = 5 * 60_000;
const VERIFIED_CACHE_SIZE = 10_000;
// Mesh and gateway credentials: a handful of live tokens (one per calling replica).
const HS256_CACHE_SIZE = 256;
const JWKS_MIN_REFRESH_MS = 10_000;
const REVOCATIONS_WAIT_MS = 5_000;
const KEYS_RETRY_MS = 250;
// Short enough that a replica is ready within seconds of auth coming back.
const KEYS_MAX_RETRY_MS = 5_000;

/**
 * Verifies access tokens locally against auth's JWKS. Keys are cached; an unknown `kid`
 * triggers a refresh (at most every 10 s) so rotation never signs anyone out.
 */
export function createAccessTokenVerifier(opts: {
  fetchJwks: () => Promise<JSONWebKeySet>;
  issuer: string;
  audience: string;
  /** Sessions revoked before their access tokens expire (sign-out, a stolen refresh token). */
  revoked?: RevocationList;
  /** How long a check may wait for the revocation list to catch up before UNAVAILABLE. */
  revocationWaitMs?: number;
}): AccessTokenVerifier {
  // Until the list has caught up with past revocations (a replica just started), a revoked
  // session would pass: wait for it, and refuse to decide rather than let one through.
  const refuseRevoked = async (identity: UserIdentity) => {
    if (!opts.revoked) return identity;
    await opts.revoked.current(opts.revocationWaitMs ?? REVOCATIONS_WAIT_MS);
    if (opts.revoked.isRevoked(identity)) {
      throw new ConnectError("this session was revoked; sign in again", Code.Unauthenticated);
    }
    return identity;
  };
  let keys: JWTVerifyGetKey | undefined;
  let fetchedAt = 0;
  // Tokens already verified, until they expire: a signature check per request per hop is the
  // costliest part of a cheap call. Cleared whenever the key set is refetched.
  const verified = new Map<string, UserIdentity>();
  const verifying = new Map<string, Promise<UserIdentity>>();
  let pending: Promise<JWTVerifyGetKey> | undefined;

  const refresh = (): Promise<JWTVerifyGetKey> => {
    pending ??= opts
      .fetchJwks()
      .then((set) => {
        keys = createLocalJWKSet(set);
        verified.clear();
        fetchedAt = Date.now();
        return keys;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };

  const keySet = async (): Promise<JWTVerifyGetKey> => {
    if (keys && Date.now() - fetchedAt < JWKS_MAX_AGE_MS) return keys;
    try {
      return await refresh();
    } catch (err) {
      // A stale key set is better than none while auth is briefly unreachable.
      if (keys) return keys;
      throw new ConnectError("cannot verify tokens right now", Code.Unavailable, undefined, undefined, err);
    }
  };

  const verifyWith = (token: string, getKey: JWTVerifyGetKey) =>
    jwtVerify(token, getKey, {
      issuer: opts.issuer,
      audience: opts.audience,
      algorithms: [ACCESS_TOKEN_ALG],
      typ: ACCESS_TOKEN_TYPE,
      requiredClaims: ["sub", "sid", "jti", "iat", "exp"],
    });

  return {
    hasKeys: () => keys !== undefined,
    async loadKeys(signal) {
      for (
        let wait = KEYS_RETRY_MS;
        !keys && !signal?.aborted;
        wait = Math.min(wait * 2, KEYS_MAX_RETRY_MS)
      ) {
        await refresh().catch(() => delay(wait, undefined, { signal }).catch(() => {}));
      }
    },
    async verify(token) {
      const hit = verified.get(token);
      if (hit && hit.expiresAt.getTime() > Date.now() && Date.now() - fetchedAt < JWKS_MAX_AGE_MS) {
        return refuseRevoked(hit);
      }
      // A burst of calls with one new token (a client opening many streams, or reconnecting
      // them all) checks its signature once, not once per call.
      let inFlight = verifying.get(token);
      if (!inFlight) {
        inFlight = check(token).finally(() => verifying.delete(token));
        verifying.set(token, inFlight);
      }
      return refuseRevoked(await inFlight);
    },
  };

  async function check(token: string): Promise<UserIdentity> {
    let result: Awaited<ReturnType<typeof verifyWith>>;
    try {
      try {
        result = await verifyWith(token, await keySet());
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== "ERR_JWKS_NO_MATCHING_KEY" || Date.now() - fetchedAt < JWKS_MIN_REFRESH_MS) throw err;
        result = await verifyWith(token, await refresh());
      }
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      throw new ConnectError("invalid access token", Code.Unauthenticated);
    }
    const { payload } = result;
    if (!issuedWithin(payload, MAX_ACCESS_TOKEN_TTL_MS / 1000)) {
      throw new ConnectError("invalid access token", Code.Unauthenticated);
    }
    const roles = Array.isArray(payload.roles) ? payload.roles.filter((r) => typeof r === "string") : [];
    const identity: UserIdentity = {
      userId: String(payload.sub),
      sessionId: String(payload.sid),
      roles,
      tokenId: String(payload.jti),
      email: typeof payload.email === "string" ? payload.email : "",
      emailVerified: payload.email_verified === true,
      issuedAt: new Date((payload.iat ?? 0) * 1000),
      expiresAt: new Date((payload.exp ?? 0) * 1000),
    };
    if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string);
    verified.set(token, identity);
    return identity;
  }
}

/**
 * True when a verified token's claims say it was issued for no longer than we ever issue
 * tokens, and not in the future: a leaked signing key or a mistaken issuer must not yield
 * tokens that outlive every rotation and revocation.
 */
export function issuedWithin(payload: JWTPayload, maxLifetimeS: number): boolean {
  const { iat, exp } = payload;
  if (typeof iat !== "number" || typeof exp !== "number") return false;
  return exp - iat <= maxLifetimeS && exp > iat && iat <= Date.now() / 1000 + CLOCK_SKEW_S;
}

/** Session ids whose access tokens must be refused although they have not expired yet. */
export interface RevocationList {
  /**
   * Refuses the session's tokens from now until `until` (when the last access token the session
   * could hold expires); `revokedAt` is when it was revoked.
   */
  revoke(sessionId: string, until: Date, revokedAt?: Date): void;
  /** True when this token must be refused: its session was revoked (or forgotten, see below). */
  isRevoked(token: { sessionId: string; issuedAt: Date; expiresAt: Date }): boolean;
  /** Calls fn if the session is revoked later (to end its open streams); returns the unwatch. */
  watch(sessionId: string, fn: () => void): () => void;
  /** Called once the list holds every revocation that existed when it started following them. */
  markCurrent(): void;
  /** Resolves once current; UNAVAILABLE if that takes longer than timeoutMs (fail closed). */
  current(timeoutMs: number): Promise<void>;
  readonly size: number;
}

/**
 * An in-memory denylist of revoked sessions, fed on every replica by auth's SessionRevoked
 * events. Entries leave once the session's tokens have expired, so it stays small. It never
 * forgets a revocation that still matters: past `maxEntries` the oldest entry goes, and every
 * token issued no later than that session's revocation is refused until such tokens have all
 * expired (their clients refresh: a fresh token passes).
 */
export function createRevocationList(maxEntries = 200_000): RevocationList {
  // Insertion order is close to expiry order (every entry lives one token lifetime), so pruning
  // from the front is cheap.
  const entries = new Map<string, { until: number; revokedAt: number }>();
  const watchers = new Map<string, Set<() => void>>();
  const forgotten = { revokedAt: 0, until: 0 };
  let isCurrent = false;
  const waiters = new Set<() => void>();
  const prune = () => {
    const now = Date.now();
    for (const [sid, e] of entries) {
      if (e.until > now && entries.size < maxEntries) break;
      entries.delete(sid);
      if (e.until > now) {
        forgotten.revokedAt = Math.max(forgotten.revokedAt, e.revokedAt);
        forgotten.until = Math.max(forgotten.until, e.until);
      }
    }
  };
  return {
    revoke(sessionId, until, revokedAt = new Date()) {
      const t = until.getTime();
      if (t <= Date.now()) return;
      prune();
      const before = entries.get(sessionId);
      entries.set(sessionId, {
        until: Math.max(t, before?.until ?? 0),
        revokedAt: Math.max(revokedAt.getTime(), before?.revokedAt ?? 0),
      });
      for (const fn of watchers.get(sessionId) ?? []) fn();
    },
    isRevoked({ sessionId, issuedAt, expiresAt }) {
      const now = Date.now();
      if (now < forgotten.until && issuedAt.getTime() <= forgotten.revokedAt) return true;
      const e = entries.get(sessionId);
      return e !== undefined && e.until > now && expiresAt.getTime() > now;
    },
    watch(sessionId, fn) {
      const set = watchers.get(sessionId) ?? new Set();
      watchers.set(sessionId, set);
      set.add(fn);
      return () => {
        set.delete(fn);
        if (set.size === 0) watchers.delete(sessionId);
      };
    },
    markCurrent() {
      isCurrent = true;
      for (const wake of waiters) wake();
      waiters.clear();
    },
    current(timeoutMs) {
      if (isCurrent) return Promise.resolve();
      // One waiter per check, removed when it times out: a long wait holds nothing per call.
      return new Promise<void>((resolve, reject) => {
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(new ConnectError("cannot check for revoked sessions right now", Code.Unavailable));
        }, timeoutMs);
        waiters.add(wake);
      });
    },
    get size() {
      return entries.size;
    },
  };
}

const MESH_AUDIENCE = "protomesh-mesh";
const MESH_TOKEN_TTL_S = 300;
const encoder = new TextEncoder();

/**
 * Credentials one service presents to another for INTERNAL methods: a short-lived HS256 JWT
 * keyed by MESH_SECRET. The gateway never holds the secret, so nothing from outside can mint one.
 */
export function createMeshCredentials(secret: string, serviceName: string): { token(): Promise<string> } {
  return createHs256Credentials({
    secret,
    subject: serviceName,
    audience: MESH_AUDIENCE,
    type: "mesh+jwt",
    ttlS: MESH_TOKEN_TTL_S,
  });
}

/**
 * A short-lived HS256 JWT for one audience, minted when the last is half through its life and
 * shared by concurrent callers: the mesh's and the gateway's credentials.
 */
export function createHs256Credentials(opts: {
  secret: string;
  subject: string;
  audience: string;
  type: string;
  ttlS: number;
}): { token(): Promise<string> } {
  const key = encoder.encode(opts.secret);
  let cached: { token: string; renewAt: number } | undefined;
  let pending: Promise<string> | undefined;
  return {
    async token() {
      if (cached && Date.now() < cached.renewAt) return cached.token;
      pending ??= new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: opts.type })
        .setSubject(opts.subject)
        .setAudience(opts.audience)
        .setIssuedAt()
        .setExpirationTime(`${opts.ttlS}s`)
        .sign(key)
        .then((token) => {
          cached = { token, renewAt: Date.now() + (opts.ttlS / 2) * 1000 };
          return token;
        })
        .finally(() => {
          pending = undefined;
        });
      return pending;
    },
  };
}

/**
 * Checks what createHs256Credentials mints; returns its subject or throws UNAUTHENTICATED with
 * `refusal`. Verified tokens are remembered until they expire: every caller sends the same
 * token for half its life, so a call between services costs a map lookup, not an HMAC and a
 * JSON parse.
 */
export function createHs256Verifier(opts: {
  secret: string;
  audience: string;
  type: string;
  ttlS: number;
  refusal: string;
}): (token: string) => Promise<string> {
  const key = encoder.encode(opts.secret);
  const verified = new Map<string, { subject: string; until: number }>();
  return async (token) => {
    const hit = verified.get(token);
    if (hit && hit.until > Date.now()) return hit.subject;
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ["HS256"],
        audience: opts.audience,
        typ: opts.type,
        requiredClaims: ["sub", "iat", "exp"],
        clockTolerance: CLOCK_SKEW_S,
      });
      if (!issuedWithin(payload, opts.ttlS)) throw new Error("lifetime");
      const subject = String(payload.sub);
      // Expired entries go first; a flood of distinct valid tokens (only a holder of the secret
      // can mint them) empties the map rather than growing it.
      for (const [t, v] of verified) if (v.until <= Date.now()) verified.delete(t);
      if (verified.size >= HS256_CACHE_SIZE) verified.clear();
      verified.set(token, { subject, until: (payload.exp ?? 0) * 1000 });
      return subject;
    } catch {
      throw new ConnectError(opts.refusal, Code.Unauthenticated);
    }
  };
}

/** Returns the calling service's name from a mesh token, or throws UNAUTHENTICATED. */
export function createMeshVerifier(secret: string): (token: string) => Promise<string> {
  return createHs256Verifier({
    secret,
    audience: MESH_AUDIENCE,
    type: "mesh+jwt",
    ttlS: MESH_TOKEN_TTL_S,
    refusal: "invalid mesh credentials",
  });
}
