import { createHash, randomBytes, randomUUID } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  EmailVerifiedSchema,
  SessionRevokedSchema,
  SignedInSchema,
  SignUpAttemptedSchema,
  UserSignedUpSchema,
} from "@protomesh/contracts/auth/v1/events_pb";
import { addEvent, MAX_ACCESS_TOKEN_TTL_MS, type Pool, type Tx, withTransaction } from "@protomesh/platform";
import type { JWK } from "jose";

/** A stored signing key. */
export interface StoredKey {
  kid: string;
  publicJwk: JWK;
  privateJwkEnc: Buffer;
  createdAt: Date;
}

/** An active account. */
export interface Account {
  userId: string;
  email: string;
  passwordHash: string;
  emailVerified: boolean;
}

/** Any credential row for an email, active or still pending. */
export interface Credential {
  userId: string;
  passwordHash: string;
  status: "pending" | "active";
}

/** A pending sign-up, for the sweeper. */
export interface PendingSignup {
  userId: string;
  email: string;
}

/** An active session, as ListSessions shows it. */
export interface SessionInfo {
  sessionId: string;
  device: string;
  ip: string;
  createdAt: Date;
  lastUsedAt: Date;
}

/** What a refresh attempt found. */
export type RefreshOutcome =
  | {
      kind: "rotated";
      userId: string;
      sessionId: string;
      email: string;
      emailVerified: boolean;
      refreshToken: string;
      refreshExpiresAt: Date;
    }
  | { kind: "reused" }
  | { kind: "invalid" };

/** Seals the successor of a used refresh token at rest (see key-ring.ts seal/open). */
export interface SecretBox {
  seal(plain: string): Buffer;
  open(sealed: Buffer): string;
}

const hashToken = (token: string) => createHash("sha256").update(token).digest();
const newRefreshToken = () => randomBytes(32).toString("base64url");
const SIGNUP_ATTEMPT_NOTICE_S = 3600;

/**
 * Ends a session and emits SessionRevoked in the same transaction, so every token verifier
 * refuses its access tokens until the last one it could hold has expired. Returns whether an
 * active session was ended.
 */
export async function revokeSession(tx: Tx, sessionId: string, reason: string): Promise<boolean> {
  const { rows } = await tx.query<{ user_id: string }>(
    "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
    [sessionId, reason],
  );
  const row = rows[0];
  if (!row) return false;
  await addSessionRevoked(tx, sessionId, row.user_id, reason);
  return true;
}

async function addSessionRevoked(tx: Tx, sessionId: string, userId: string, reason: string) {
  const now = new Date();
  await addEvent(tx, SessionRevokedSchema, {
    sessionId,
    userId,
    reason,
    // The longest any auth replica may issue tokens for, not this one's setting: during a rollout
    // that changes ACCESS_TOKEN_TTL_S, older tokens may outlive the new one.
    accessExpireTime: timestampFromDate(new Date(now.getTime() + MAX_ACCESS_TOKEN_TTL_MS)),
    occurTime: timestampFromDate(now),
  });
}

/**
 * Ends every active session of a user inside the caller's transaction (optionally all but
 * one), emitting SessionRevoked for each; returns how many ended.
 */
export async function revokeAllSessions(
  tx: Tx,
  userId: string,
  reason: string,
  exceptSessionId?: string,
): Promise<number> {
  const { rows } = await tx.query<{ id: string }>(
    `UPDATE sessions SET revoked_at = now(), revoke_reason = $2
     WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $3 RETURNING id`,
    [userId, reason, exceptSessionId ?? null],
  );
  for (const r of rows) await addSessionRevoked(tx, r.id, userId, reason);
  return rows.length;
}

/** Credentials, sessions, refresh tokens and signing keys in PostgreSQL. */
export function createPgAuthStore(pool: Pool, opts: { refreshS: number; secrets: SecretBox }) {
  const refreshExpiry = () => new Date(Date.now() + opts.refreshS * 1000);

  const findAccount = async (where: string, value: string): Promise<Account | undefined> => {
    const { rows } = await pool.query<{
      user_id: string;
      email: string;
      password_hash: string;
      email_verified: boolean;
    }>(
      `SELECT user_id, email, password_hash, email_verified_at IS NOT NULL AS email_verified
       FROM credentials WHERE ${where} AND status = 'active'`,
      [value],
    );
    const r = rows[0];
    return (
      r && {
        userId: r.user_id,
        email: r.email,
        passwordHash: r.password_hash,
        emailVerified: r.email_verified,
      }
    );
  };

  return {
    /** The credential of an email in any state, to tell a new sign-up from a repeated one. */
    async findByEmail(email: string): Promise<Credential | undefined> {
      const { rows } = await pool.query<{
        user_id: string;
        password_hash: string;
        status: "pending" | "active";
      }>("SELECT user_id, password_hash, status FROM credentials WHERE email = $1", [email]);
      const r = rows[0];
      return r && { userId: r.user_id, passwordHash: r.password_hash, status: r.status };
    },

    /**
     * Claims a free email for a sign-up; returns undefined when the email is taken (an active
     * account, or another sign-up in flight). Never takes a row over: exactly one sign-up wins.
     */
    async reservePending(email: string, passwordHash: string): Promise<string | undefined> {
      const { rows } = await pool.query<{ user_id: string }>(
        `INSERT INTO credentials (user_id, email, password_hash, status) VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (email) DO NOTHING RETURNING user_id`,
        [randomUUID(), email, passwordHash],
      );
      return rows[0]?.user_id;
    },

    async deletePending(userId: string): Promise<void> {
      await pool.query("DELETE FROM credentials WHERE user_id = $1 AND status = 'pending'", [userId]);
    },

    /** Activates a pending sign-up and emits UserSignedUp, once; returns its email if it did. */
    async activate(userId: string, displayName: string): Promise<string | undefined> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ email: string }>(
          "UPDATE credentials SET status = 'active', updated_at = now() WHERE user_id = $1 AND status = 'pending' RETURNING email",
          [userId],
        );
        const row = rows[0];
        if (!row) return undefined;
        await addEvent(tx, UserSignedUpSchema, {
          userId,
          email: row.email,
          displayName,
          occurTime: timestampFromDate(new Date()),
        });
        return row.email;
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

    /**
     * Emits SignUpAttempted for an active account, at most once an hour, so that SignUp cannot
     * be used to flood its owner with emails.
     */
    async noteSignUpAttempt(userId: string): Promise<void> {
      await withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ email: string }>(
          `UPDATE credentials SET signup_attempted_at = now()
           WHERE user_id = $1 AND status = 'active'
             AND (signup_attempted_at IS NULL OR signup_attempted_at < now() - make_interval(secs => $2))
           RETURNING email`,
          [userId, SIGNUP_ATTEMPT_NOTICE_S],
        );
        const row = rows[0];
        if (!row) return;
        await addEvent(tx, SignUpAttemptedSchema, {
          userId,
          email: row.email,
          occurTime: timestampFromDate(new Date()),
        });
      });
    },

    async findActive(email: string): Promise<Account | undefined> {
      return findAccount("email = $1", email);
    },

    async findActiveById(userId: string): Promise<Account | undefined> {
      return findAccount("user_id = $1", userId);
    },

    /** Records the verified email and emits EmailVerified, once; false if it already was. */
    async markEmailVerified(userId: string, displayName: string): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ email: string }>(
          `UPDATE credentials SET email_verified_at = now(), updated_at = now()
           WHERE user_id = $1 AND status = 'active' AND email_verified_at IS NULL RETURNING email`,
          [userId],
        );
        const row = rows[0];
        if (!row) return false;
        await addEvent(tx, EmailVerifiedSchema, {
          userId,
          email: row.email,
          displayName,
          occurTime: timestampFromDate(new Date()),
        });
        return true;
      });
    },

    /**
     * Starts a session with its first refresh token and emits SignedIn. `newDevice`: the user
     * had signed in before, but never from this device and address together.
     */
    async createSession(account: { userId: string; email: string }, where: { ip: string; device: string }) {
      const sessionId = randomUUID();
      const refreshToken = newRefreshToken();
      const refreshExpiresAt = refreshExpiry();
      await withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ before: boolean; known: boolean }>(
          `SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1) AS before,
                  EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND device = $2 AND ip = $3) AS known`,
          [account.userId, where.device, where.ip],
        );
        const seen = rows[0] ?? { before: false, known: false };
        await tx.query("INSERT INTO sessions (id, user_id, ip, device) VALUES ($1, $2, $3, $4)", [
          sessionId,
          account.userId,
          where.ip,
          where.device,
        ]);
        await tx.query(
          "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
          [hashToken(refreshToken), sessionId, refreshExpiresAt],
        );
        await addEvent(tx, SignedInSchema, {
          userId: account.userId,
          sessionId,
          email: account.email,
          device: where.device,
          ip: where.ip,
          newDevice: seen.before && !seen.known,
          occurTime: timestampFromDate(new Date()),
        });
      });
      return { sessionId, refreshToken, refreshExpiresAt };
    },

    /**
     * Exchanges a refresh token for the next one in its session. Presented again within the
     * grace window, it yields the same successor (a retry, two tabs racing); later, it means
     * the token leaked: the whole session is revoked, and that revocation commits.
     */
    async rotate(refreshToken: string, graceS: number): Promise<RefreshOutcome> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{
          session_id: string;
          used_at: Date | null;
          within_grace: boolean;
          successor_enc: Buffer | null;
          expires_at: Date;
          revoked_at: Date | null;
          user_id: string;
          email: string;
          email_verified: boolean;
        }>(
          `SELECT t.session_id, t.used_at, t.used_at > now() - make_interval(secs => $2) AS within_grace,
                  t.successor_enc, t.expires_at, s.revoked_at, s.user_id, c.email,
                  c.email_verified_at IS NOT NULL AS email_verified
           FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN credentials c ON c.user_id = s.user_id
           WHERE t.token_hash = $1 FOR UPDATE OF t, s`,
          [hashToken(refreshToken), graceS],
        );
        const row = rows[0];
        if (!row || row.revoked_at) return { kind: "invalid" };
        const session = {
          userId: row.user_id,
          sessionId: row.session_id,
          email: row.email,
          emailVerified: row.email_verified,
        };
        if (row.used_at) {
          if (row.within_grace && row.successor_enc) {
            const successor = opts.secrets.open(row.successor_enc);
            const { rows: next } = await tx.query<{ expires_at: Date }>(
              "SELECT expires_at FROM refresh_tokens WHERE token_hash = $1",
              [hashToken(successor)],
            );
            if (next[0]) {
              return {
                kind: "rotated",
                ...session,
                refreshToken: successor,
                refreshExpiresAt: next[0].expires_at,
              };
            }
          }
          await revokeSession(tx, row.session_id, "refresh token reused");
          return { kind: "reused" };
        }
        if (row.expires_at.getTime() <= Date.now()) return { kind: "invalid" };
        const next = newRefreshToken();
        const refreshExpiresAt = refreshExpiry();
        await tx.query(
          "UPDATE refresh_tokens SET used_at = now(), successor_enc = $2 WHERE token_hash = $1",
          [hashToken(refreshToken), graceS > 0 ? opts.secrets.seal(next) : null],
        );
        await tx.query(
          "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
          [hashToken(next), row.session_id, refreshExpiresAt],
        );
        await tx.query("UPDATE sessions SET last_used_at = now() WHERE id = $1", [row.session_id]);
        return { kind: "rotated", ...session, refreshToken: next, refreshExpiresAt };
      });
    },

    /** Forgets the sealed successors of tokens used longer ago than the grace window. */
    async dropExpiredSuccessors(graceS: number): Promise<number> {
      const { rowCount } = await pool.query(
        `UPDATE refresh_tokens SET successor_enc = NULL
         WHERE successor_enc IS NOT NULL AND used_at < now() - make_interval(secs => $1)`,
        [graceS],
      );
      return rowCount ?? 0;
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

    /** A user's active sessions (not revoked, a refresh token still valid), most recently used first. */
    async listSessions(userId: string): Promise<SessionInfo[]> {
      const { rows } = await pool.query<{
        id: string;
        device: string;
        ip: string;
        created_at: Date;
        last_used_at: Date;
      }>(
        `SELECT s.id, s.device, s.ip, s.created_at, s.last_used_at FROM sessions s
         WHERE s.user_id = $1 AND s.revoked_at IS NULL
           AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id AND t.used_at IS NULL AND t.expires_at > now())
         ORDER BY s.last_used_at DESC, s.created_at DESC`,
        [userId],
      );
      return rows.map((r) => ({
        sessionId: r.id,
        device: r.device,
        ip: r.ip,
        createdAt: r.created_at,
        lastUsedAt: r.last_used_at,
      }));
    },

    /** Ends one session of this user; false when the user has no active session with that id. */
    async revokeUserSession(userId: string, sessionId: string, reason: string): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query("SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2", [
          sessionId,
          userId,
        ]);
        return rows.length > 0 && revokeSession(tx, sessionId, reason);
      });
    },

    /** Ends every session of a user (but `exceptSessionId`), emitting SessionRevoked for each. */
    async revokeAll(userId: string, reason: string, exceptSessionId?: string): Promise<number> {
      return withTransaction(pool, (tx) => revokeAllSessions(tx, userId, reason, exceptSessionId));
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
