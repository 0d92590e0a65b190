import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { UserUpdatedSchema } from "@protomesh/contracts/user/v1/events_pb";
import {
  addEvent,
  type Cursor,
  type Page,
  type Pool,
  type Tx,
  toPage,
  withTransaction,
} from "@protomesh/platform";
import { toUserMessage } from "./convert.ts";

/** A stored profile. */
export interface UserRecord {
  id: string;
  email: string;
  displayName: string;
  bio: string;
  avatarUrl: string;
  phone: string;
  locale: string;
  roles: string[];
  createdAt: Date;
  updatedAt: Date;
}

/**
 * The profile fields a user may change: update-mask path → column. The contract's mask rule
 * lists the same paths; this is the only other place they are named.
 */
const PROFILE_COLUMNS = {
  display_name: "display_name",
  bio: "bio",
  avatar_url: "avatar_url",
  phone: "phone",
  locale: "locale",
} as const;

export type ProfilePath = keyof typeof PROFILE_COLUMNS;
export const isProfilePath = (p: string): p is ProfilePath => Object.hasOwn(PROFILE_COLUMNS, p);

/** New values by mask path. */
export type ProfileChanges = Partial<Record<ProfilePath, string>>;

/** ListUsers' filters; empty means any. */
export interface UserFilter {
  role: string;
  email: string;
}

interface Row {
  id: string;
  email: string;
  display_name: string;
  bio: string;
  avatar_url: string;
  phone: string;
  locale: string;
  roles: string[];
  created_at: Date;
  updated_at: Date;
}

/** `%`, `_` and the escape character itself match literally in a LIKE pattern after this. */
const escapeLike = (s: string) => s.replace(/[\\%_]/g, "\\$&");

const toRecord = (r: Row): UserRecord => ({
  id: r.id,
  email: r.email,
  displayName: r.display_name,
  bio: r.bio,
  avatarUrl: r.avatar_url,
  phone: r.phone,
  locale: r.locale,
  roles: r.roles,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** Profiles in PostgreSQL. */
export function createPgUserStore(pool: Pool) {
  return {
    /**
     * Inserts a profile. Returns the existing one when the same id and email were already
     * created (a retried sign-up), or undefined when the email or id belongs to someone else.
     */
    async create(user: { id: string; email: string; displayName: string }): Promise<UserRecord | undefined> {
      const inserted = await pool.query<Row>(
        "INSERT INTO users (id, email, display_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING *",
        [user.id, user.email, user.displayName],
      );
      if (inserted.rows[0]) return toRecord(inserted.rows[0]);
      const existing = await this.get(user.id);
      return existing?.email === user.email ? existing : undefined;
    },

    async get(id: string): Promise<UserRecord | undefined> {
      const { rows } = await pool.query<Row>("SELECT * FROM users WHERE id = $1", [id]);
      return rows[0] && toRecord(rows[0]);
    },

    /** Applies the changes and emits UserUpdated in one transaction; undefined if no such user. */
    async update(id: string, changes: ProfileChanges): Promise<UserRecord | undefined> {
      const entries = Object.entries(changes) as [ProfilePath, string][];
      const sets = entries.map(([path], i) => `${PROFILE_COLUMNS[path]} = $${i + 2}`);
      return updateWithEvent(
        `UPDATE users SET ${[...sets, "updated_at = now()"].join(", ")} WHERE id = $1 RETURNING *`,
        [id, ...entries.map(([, v]) => v)],
        entries.map(([path]) => path),
      );
    },

    /** Replaces the roles and emits UserUpdated in one transaction; undefined if no such user. */
    async setRoles(id: string, roles: string[]): Promise<UserRecord | undefined> {
      return updateWithEvent(
        "UPDATE users SET roles = $2, updated_at = now() WHERE id = $1 RETURNING *",
        [id, roles],
        ["roles"],
      );
    },

    /** The user's roles; undefined if no such user. */
    async getRoles(id: string): Promise<string[] | undefined> {
      const { rows } = await pool.query<{ roles: string[] }>("SELECT roles FROM users WHERE id = $1", [id]);
      return rows[0]?.roles;
    },

    /**
     * Profiles whose display name starts with `prefix` (case-insensitive, wildcards literal),
     * ordered by lower-cased name in code-point order, then id; served by the users_search index.
     */
    async search(prefix: string, limit: number, after?: Cursor): Promise<Page<UserRecord>> {
      const name = `lower(display_name) COLLATE "C"`;
      const params: unknown[] = [escapeLike(prefix), limit + 1];
      const where = [`${name} LIKE lower($1) || '%' ESCAPE '\\'`];
      if (after) {
        params.push(after.key, after.id);
        where.push(`(${name}, id) > ($3::text COLLATE "C", $4::uuid)`);
      }
      const { rows } = await pool.query<Row & { sort_key: string }>(
        `SELECT *, lower(display_name) AS sort_key FROM users WHERE ${where.join(" AND ")}
         ORDER BY ${name}, id LIMIT $2`,
        params,
      );
      return toPage(rows, limit, toRecord);
    },

    /** Every profile matching the filter, newest first. */
    async list(filter: UserFilter, limit: number, after?: Cursor): Promise<Page<UserRecord>> {
      const params: unknown[] = [limit + 1];
      const where = ["true"];
      if (filter.role) where.push(`roles @> ARRAY[$${params.push(filter.role)}]::text[]`);
      // Emails are stored lower-cased (auth normalises them before CreateUser).
      if (filter.email) where.push(`email = lower($${params.push(filter.email)})`);
      if (after) {
        where.push(
          `(created_at, id) < ($${params.push(after.key)}::timestamptz, $${params.push(after.id)}::uuid)`,
        );
      }
      // The cursor keeps created_at as PostgreSQL's text, exact to the microsecond (a JS Date
      // would round it to milliseconds and skip or repeat rows).
      const { rows } = await pool.query<Row & { sort_key: string }>(
        `SELECT *, created_at::text AS sort_key FROM users WHERE ${where.join(" AND ")}
         ORDER BY created_at DESC, id DESC LIMIT $1`,
        params,
      );
      return toPage(rows, limit, toRecord);
    },

    /** Forgets everything kept about a user (their account was deleted); a no-op if already gone. */
    async remove(tx: Tx, id: string): Promise<void> {
      await tx.query("DELETE FROM users WHERE id = $1", [id]);
    },
  };

  /** Runs one UPDATE … RETURNING * and writes its UserUpdated event in the same transaction. */
  function updateWithEvent(sql: string, params: unknown[], changedFields: string[]) {
    return withTransaction(pool, async (tx): Promise<UserRecord | undefined> => {
      const row = (await tx.query<Row>(sql, params)).rows[0];
      if (!row) return undefined;
      const user = toRecord(row);
      await addEvent(tx, UserUpdatedSchema, {
        user: toUserMessage(user),
        changedFields,
        occurTime: timestampFromDate(user.updatedAt),
      });
      return user;
    });
  }
}

export type UserStore = ReturnType<typeof createPgUserStore>;
