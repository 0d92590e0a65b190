import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { Code, fail, requireUser, type ServiceHandlers } from "@protomesh/platform";
import { type ProfileChanges, toUserMessage, type UserStore } from "./pg-user-store.ts";

const FIELDS: Record<string, keyof ProfileChanges> = {
  display_name: "displayName",
  bio: "bio",
  avatar_url: "avatarUrl",
  phone: "phone",
  locale: "locale",
};

/** UserService handlers. */
export function createUserHandlers(store: UserStore): ServiceHandlers<typeof UserService> {
  return {
    async createUser(req) {
      const user = await store.create({ id: req.userId, email: req.email, displayName: req.displayName });
      if (!user) throw fail(Code.AlreadyExists, "a user with this email already exists");
      return { user: toUserMessage(user) };
    },

    async getUser(req) {
      const user = await store.get(req.userId);
      if (!user) throw fail(Code.NotFound, "user not found");
      return {
        profile: { id: user.id, displayName: user.displayName, bio: user.bio, avatarUrl: user.avatarUrl },
      };
    },

    async getMe(_req, ctx) {
      const user = await store.get(requireUser(ctx).userId);
      if (!user) throw fail(Code.NotFound, "user not found");
      return { user: toUserMessage(user) };
    },

    async updateMe(req, ctx) {
      const me = requireUser(ctx);
      // Validation guarantees the mask is present and names only these fields.
      const paths = [...new Set(req.updateMask?.paths ?? [])];
      const changes: ProfileChanges = {};
      for (const path of paths) {
        const key = FIELDS[path];
        if (key) changes[key] = req.profile?.[key] ?? "";
      }
      const user = await store.update(me.userId, changes, paths);
      if (!user) throw fail(Code.NotFound, "user not found");
      return { user: toUserMessage(user) };
    },
  };
}
