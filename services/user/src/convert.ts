// Domain ↔ protobuf for user: the only place that builds user's messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type ProfileUpdate,
  ProfileUpdateSchema,
  type PublicProfileSchema,
  type UserSchema,
} from "@protomesh/contracts/user/v1/user_pb";
import type { ProfileChanges, ProfilePath, UserRecord } from "./pg-user-store.ts";

/** The full profile, as its owner (and events) see it. */
export function toUserMessage(u: UserRecord): MessageInitShape<typeof UserSchema> {
  return {
    id: u.id,
    email: u.email,
    displayName: u.displayName,
    bio: u.bio,
    avatarUrl: u.avatarUrl,
    phone: u.phone,
    locale: u.locale,
    roles: u.roles,
    createTime: timestampFromDate(u.createdAt),
    updateTime: timestampFromDate(u.updatedAt),
  };
}

/** What any signed-in user may see of another: never email, phone or roles. */
export function toPublicProfile(u: UserRecord): MessageInitShape<typeof PublicProfileSchema> {
  return { id: u.id, displayName: u.displayName, bio: u.bio, avatarUrl: u.avatarUrl };
}

/**
 * The new values of the fields an update mask names. Mask paths are the contract's field
 * names, so each value is read through the descriptor instead of a second table of names.
 */
export function toProfileChanges(profile: ProfileUpdate | undefined, paths: ProfilePath[]): ProfileChanges {
  const changes: ProfileChanges = {};
  for (const path of paths) {
    const field = ProfileUpdateSchema.fields.find((f) => f.name === path);
    if (!field) throw new Error(`ProfileUpdate has no field ${path}`);
    changes[path] = String((profile as Record<string, unknown> | undefined)?.[field.localName] ?? "");
  }
  return changes;
}
