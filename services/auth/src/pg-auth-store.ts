import { createHash, randomBytes, randomUUID } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { SessionRevokedSchema, UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { addEvent, MAX_ACCESS_TOKEN_TTL_MS, type Pool, type Tx, withTransaction } from "@protomesh/platform";
import type { JWK } from "jose";

/** A stored signing key. */
export interface StoredKey {
  kid: string;
  publicJwk: JWK;
  privateJwkEnc: Buffer;
  createdAt: Date;
}

/** An account that may sign in. */
export interface Credentials {
  userId: string;
  email: string;
  passwordHash: string;
  roles: string[];
}

/** A pending sign-up, for the sweeper. */
export interface PendingSignup {
  userId: string;
  email: string;
}

/** What a refresh attempt found. */
export type RefreshOutcome =
  | {
      kind: "rotated";
      userId: string;
      sessionId: string;
      roles: string[];
      refreshToken: string;
      refreshExpiresAt: Date;
    }
  | { kind: "reused" }
  | { kind: "invalid" };

const hashToken = (token: string) => createHash("sha256").update(token).digest();
const newRefreshToken = () => randomBytes(32).toString("base64url");

/**
 * Ends a session and emits SessionRevoked in the same transaction, so every token verifier
 * refuses its access tokens until the last one it could hold has expired.
 */
async function revokeSession(tx: Tx, sessionId: string, reason: string): Promise<void> {
  const { rows } = await tx.query<{ user_id: string }>(
    "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
    [sessionId, reason],
  );
  const row = rows[0];
  if (!row) return;
  const now = new Date();
  await addEvent(tx, SessionRevokedSchema, {
    sessionId,
    userId: row.user_id,
    reason,
    // The longest any auth replica may issue tokens for, not this one's setting: during a rollout
    // that changes ACCESS_TOKEN_TTL_S, older tokens may outlive the new one.
    accessExpireTime: timestampFromDate(new Date(now.getTime() + MAX_ACCESS_TOKEN_TTL_MS)),
    occurTime: timestampFromDate(now),
  });
}

/** Credentials, sessions, refresh tokens and signing keys in PostgreSQL. */
export function createPgAuthStore(pool: Pool, ttl: { refreshS: number }) {
  const refreshExpiry = () => new Date(Date.now() + ttl.refreshS * 1000);

  return {
    /**
     * Claims the email for a sign-up. A pending sign-up for the same email is taken over (its
     * id is reused, so UserService sees a retry); returns undefined if the account is active.
     */
    async reservePending(email: string, passwordHash: string): Promise<string | undefined> {
      const { rows } = await pool.query<{ user_id: string }>(
        `INSERT INTO credentials (user_id, email, password_hash, status) VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()
           WHERE credentials.status = 'pending'
         RETURNING user_id`,
        [randomUUID(), email, passwordHash],
      );
      return rows[0]?.user_id;
    },

    async deletePending(userId: string): Promise<void> {
      await pool.query("DELETE FROM credentials WHERE user_id = $1 AND status = 'pending'", [userId]);
    },

    /** Activates a pending sign-up and emits UserSignedUp, once. */
    async activate(userId: string, displayName: string): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ email: string }>(
          "UPDATE credentials SET status = 'active', updated_at = now() WHERE user_id = $1 AND status = 'pending' RETURNING email",
          [userId],
        );
        const row = rows[0];
        if (!row) return false;
        await addEvent(tx, UserSignedUpSchema, {
          userId,
          email: row.email,
          displayName,
          occurTime: timestampFromDate(new Date()),
        });
        return true;
      });
    },

    async listPending(olderThanS: number, limit = 100): Promise<PendingSignup[]> {
      const { rows } = await pool.query<{ user_id: string; email: string }>(
        `SELECT user_id, email FROM credentials
         WHERE status = 'pending' AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2`,
        [olderThanS, limit],
      );
      return rows.map((r) => ({ userId: r.user_id, email: r.email }));
    },

    async findActive(email: string): Promise<Credentials | undefined> {
      const { rows } = await pool.query<{
        user_id: string;
        email: string;
        password_hash: string;
        roles: string[];
      }>(
        "SELECT user_id, email, password_hash, roles FROM credentials WHERE email = $1 AND status = 'active'",
        [email],
      );
      const r = rows[0];
      return r && { userId: r.user_id, email: r.email, passwordHash: r.password_hash, roles: r.roles };
    },

    /** Starts a session with its first refresh token. */
    async createSession(userId: string, ip: string) {
      const sessionId = randomUUID();
      const refreshToken = newRefreshToken();
      const refreshExpiresAt = refreshExpiry();
      await withTransaction(pool, async (tx) => {
        await tx.query("INSERT INTO sessions (id, user_id, ip) VALUES ($1, $2, $3)", [sessionId, userId, ip]);
        await tx.query(
          "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
          [hashToken(refreshToken), sessionId, refreshExpiresAt],
        );
      });
      return { sessionId, refreshToken, refreshExpiresAt };
    },

    /**
     * Exchanges a refresh token for the next one in its session. A token presented a second
     * time means it leaked: the whole session is revoked, and that revocation commits.
     */
    async rotate(refreshToken: string): Promise<RefreshOutcome> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{
          session_id: string;
          used_at: Date | null;
          expires_at: Date;
          revoked_at: Date | null;
          user_id: string;
          roles: string[];
        }>(
          `SELECT t.session_id, t.used_at, t.expires_at, s.revoked_at, s.user_id, c.roles
           FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN credentials c ON c.user_id = s.user_id
           WHERE t.token_hash = $1 FOR UPDATE OF t, s`,
          [hashToken(refreshToken)],
        );
        const row = rows[0];
        if (!row || row.revoked_at) return { kind: "invalid" };
        if (row.used_at) {
          await revokeSession(tx, row.session_id, "refresh token reused");
          return { kind: "reused" };
        }
        if (row.expires_at.getTime() <= Date.now()) return { kind: "invalid" };
        const next = newRefreshToken();
        const refreshExpiresAt = refreshExpiry();
        await tx.query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", [
          hashToken(refreshToken),
        ]);
        await tx.query(
          "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
          [hashToken(next), row.session_id, refreshExpiresAt],
        );
        await tx.query("UPDATE sessions SET last_used_at = now() WHERE id = $1", [row.session_id]);
        return {
          kind: "rotated",
          userId: row.user_id,
          sessionId: row.session_id,
          roles: row.roles,
          refreshToken: next,
          refreshExpiresAt,
        };
      });
    },

    /** Revokes the session a refresh token belongs to; unknown tokens are ignored. */
    async revokeByRefreshToken(refreshToken: string): Promise<void> {
      await withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ session_id: string }>(
          "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
          [hashToken(refreshToken)],
        );
        if (rows[0]) await revokeSession(tx, rows[0].session_id, "signed out");
      });
    },

    async listKeys(limit: number): Promise<StoredKey[]> {
      const { rows } = await pool.query<{
        kid: string;
        public_jwk: JWK;
        private_jwk_enc: Buffer;
        created_at: Date;
      }>(
        "SELECT kid, public_jwk, private_jwk_enc, created_at FROM signing_keys ORDER BY created_at DESC, kid LIMIT $1",
        [limit],
      );
      return rows.map((r) => ({
        kid: r.kid,
        publicJwk: r.public_jwk,
        privateJwkEnc: r.private_jwk_enc,
        createdAt: r.created_at,
      }));
    },

    async addKey(kid: string, publicJwk: JWK, privateJwkEnc: Buffer): Promise<void> {
      await pool.query("INSERT INTO signing_keys (kid, public_jwk, private_jwk_enc) VALUES ($1, $2, $3)", [
        kid,
        publicJwk,
        privateJwkEnc,
      ]);
    },
  };
}

export type AuthStore = ReturnType<typeof createPgAuthStore>;
