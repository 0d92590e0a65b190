import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { Code, fail, requireUser, type ServiceHandlers } from "@protomesh/platform";
import { toProfileChanges, toPublicProfile, toUserMessage } from "./convert.ts";
import { isProfilePath, type UserStore } from "./pg-user-store.ts";

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
      return { profile: toPublicProfile(user) };
    },

    async getMe(_req, ctx) {
      const user = await store.get(requireUser(ctx).userId);
      if (!user) throw fail(Code.NotFound, "user not found");
      return { user: toUserMessage(user) };
    },

    async updateMe(req, ctx) {
      const me = requireUser(ctx);
      // Validation guarantees the mask is present and names only profile paths.
      const paths = [...new Set(req.updateMask?.paths ?? [])].filter(isProfilePath);
      const user = await store.update(me.userId, toProfileChanges(req.profile, paths));
      if (!user) throw fail(Code.NotFound, "user not found");
      return { user: toUserMessage(user) };
    },

    // Built in the identity issue (in progress).
    searchUsers: notYet,
    listUsers: notYet,
    setRoles: notYet,
    getRoles: notYet,
  };
}

const notYet = async (): Promise<never> => {
  throw fail(Code.Unimplemented, "not implemented yet");
};
