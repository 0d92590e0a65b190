import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { UserUpdatedSchema } from "@protomesh/contracts/user/v1/events_pb";
import { addEvent, type Pool, withTransaction } from "@protomesh/platform";
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
      return withTransaction(pool, async (tx) => {
        const entries = Object.entries(changes) as [ProfilePath, string][];
        const sets = entries.map(([path], i) => `${PROFILE_COLUMNS[path]} = $${i + 2}`);
        const { rows } = await tx.query<Row>(
          `UPDATE users SET ${[...sets, "updated_at = now()"].join(", ")} WHERE id = $1 RETURNING *`,
          [id, ...entries.map(([, v]) => v)],
        );
        const row = rows[0];
        if (!row) return undefined;
        const user = toRecord(row);
        await addEvent(tx, UserUpdatedSchema, {
          user: toUserMessage(user),
          changedFields: entries.map(([path]) => path),
          occurTime: timestampFromDate(user.updatedAt),
        });
        return user;
      });
    },
  };
}

export type UserStore = ReturnType<typeof createPgUserStore>;
