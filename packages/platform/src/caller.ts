import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey, jwtVerify, SignJWT } from "jose";
import { Code, ConnectError } from "./errors.ts";

/** A signed-in user, as proven by a verified access token. */
export interface UserIdentity {
  userId: string;
  sessionId: string;
  roles: string[];
  tokenId: string;
  issuedAt: Date;
  expiresAt: Date;
}

/** Verifies access tokens; rejects anything not valid with UNAUTHENTICATED. */
export interface AccessTokenVerifier {
  verify(token: string): Promise<UserIdentity>;
}

/** Access tokens are JWTs of this type (RFC 9068), which keeps other JWTs from passing as one. */
export const ACCESS_TOKEN_TYPE = "at+jwt";
/** The only algorithm access tokens may use; pinned so that `none` or HS256 can never verify. */
export const ACCESS_TOKEN_ALG = "EdDSA";

const JWKS_MAX_AGE_MS = 5 * 60_000;
const VERIFIED_CACHE_SIZE = 10_000;
const JWKS_MIN_REFRESH_MS = 10_000;

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
}): AccessTokenVerifier {
  const refuseRevoked = (identity: UserIdentity) => {
    if (opts.revoked?.has(identity.sessionId)) {
      throw new ConnectError("this session was revoked; sign in again", Code.Unauthenticated);
    }
    return identity;
  };
  let keys: JWTVerifyGetKey | undefined;
  let fetchedAt = 0;
  // Tokens already verified, until they expire: a signature check per request per hop is the
  // costliest part of a cheap call. Cleared whenever the key set is refetched.
  const verified = new Map<string, UserIdentity>();
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
    async verify(token) {
      const hit = verified.get(token);
      if (hit && hit.expiresAt.getTime() > Date.now() && Date.now() - fetchedAt < JWKS_MAX_AGE_MS) {
        return refuseRevoked(hit);
      }
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
      const roles = Array.isArray(payload.roles) ? payload.roles.filter((r) => typeof r === "string") : [];
      const identity: UserIdentity = {
        userId: String(payload.sub),
        sessionId: String(payload.sid),
        roles,
        tokenId: String(payload.jti),
        issuedAt: new Date((payload.iat ?? 0) * 1000),
        expiresAt: new Date((payload.exp ?? 0) * 1000),
      };
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string);
      verified.set(token, identity);
      return refuseRevoked(identity);
    },
  };
}

/** Session ids whose access tokens must be refused although they have not expired yet. */
export interface RevocationList {
  /** Refuses the session's tokens until `until` (when its last access token expires). */
  revoke(sessionId: string, until: Date): void;
  has(sessionId: string): boolean;
  readonly size: number;
}

/**
 * An in-memory denylist of revoked sessions, fed on every replica by auth's SessionRevoked
 * events. Entries leave once the session's tokens have expired, so it stays small; past
 * `maxEntries` the entries closest to expiry go first.
 */
export function createRevocationList(maxEntries = 200_000): RevocationList {
  const until = new Map<string, number>();
  const prune = () => {
    const now = Date.now();
    for (const [sid, t] of until) if (t <= now) until.delete(sid);
    if (until.size < maxEntries) return;
    const byExpiry = [...until].sort((a, b) => a[1] - b[1]);
    for (const [sid] of byExpiry.slice(0, until.size - maxEntries + 1)) until.delete(sid);
  };
  return {
    revoke(sessionId, at) {
      if (at.getTime() <= Date.now()) return;
      if (until.size >= maxEntries) prune();
      until.set(sessionId, Math.max(at.getTime(), until.get(sessionId) ?? 0));
    },
    has(sessionId) {
      const t = until.get(sessionId);
      if (t === undefined) return false;
      if (t > Date.now()) return true;
      until.delete(sessionId);
      return false;
    },
    get size() {
      return until.size;
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
  const key = encoder.encode(secret);
  let cached: { token: string; renewAt: number } | undefined;
  return {
    async token() {
      if (cached && Date.now() < cached.renewAt) return cached.token;
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: "mesh+jwt" })
        .setSubject(serviceName)
        .setAudience(MESH_AUDIENCE)
        .setIssuedAt()
        .setExpirationTime(`${MESH_TOKEN_TTL_S}s`)
        .sign(key);
      cached = { token, renewAt: Date.now() + (MESH_TOKEN_TTL_S / 2) * 1000 };
      return token;
    },
  };
}

/** Returns the calling service's name from a mesh token, or throws UNAUTHENTICATED. */
export function createMeshVerifier(secret: string): (token: string) => Promise<string> {
  const key = encoder.encode(secret);
  return async (token) => {
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ["HS256"],
        audience: MESH_AUDIENCE,
        typ: "mesh+jwt",
        requiredClaims: ["sub", "exp"],
      });
      return String(payload.sub);
    } catch {
      throw new ConnectError("invalid mesh credentials", Code.Unauthenticated);
    }
  };
}
