import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  ADMIN_ROLE,
  Code,
  fail,
  type PageTokens,
  requireUser,
  type ServiceHandlers,
} from "@protomesh/platform";
import { toProfileChanges, toPublicProfile, toUserMessage } from "./convert.ts";
import { isProfilePath, type UserStore } from "./pg-user-store.ts";

const DEFAULT_PAGE_SIZE = 20;

/** UserService handlers. */
export function createUserHandlers(
  store: UserStore,
  pageTokens: PageTokens,
): ServiceHandlers<typeof UserService> {
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

    // Callers find themselves too: a contact search that hid one name would look broken, and
    // the results are public profiles anyway.
    async searchUsers(req) {
      const scope = `search\0${req.query}`;
      const page = await store.search(
        req.query,
        req.pageSize || DEFAULT_PAGE_SIZE,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return {
        profiles: page.items.map(toPublicProfile),
        nextPageToken: pageTokens.tokenFor(scope, page.next),
      };
    },

    async listUsers(req) {
      const filter = { role: req.role, email: req.email };
      const scope = `list\0${filter.role}\0${filter.email.toLowerCase()}`;
      const page = await store.list(
        filter,
        req.pageSize || DEFAULT_PAGE_SIZE,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return { users: page.items.map(toUserMessage), nextPageToken: pageTokens.tokenFor(scope, page.next) };
    },

    async setRoles(req, ctx) {
      // Services (the operator CLI) have no user and may; an admin may not demote themselves.
      if (ctx.user?.userId === req.userId && !req.roles.includes(ADMIN_ROLE)) {
        throw fail(
          Code.FailedPrecondition,
          "you cannot take the admin role from yourself; another admin has to do it",
        );
      }
      const user = await store.setRoles(req.userId, req.roles);
      if (!user) throw fail(Code.NotFound, "user not found");
      return { user: toUserMessage(user) };
    },

    async getRoles(req) {
      const roles = await store.getRoles(req.userId);
      if (!roles) throw fail(Code.NotFound, "user not found");
      return { roles };
    },

    async getContact(req) {
      const user = await store.get(req.userId);
      if (!user) throw fail(Code.NotFound, "user not found");
      return { email: user.email, displayName: user.displayName };
    },
  };
}
